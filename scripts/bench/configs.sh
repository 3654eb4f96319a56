# shellcheck shell=bash
# Config writers for scripts/bench.sh: the static origin, the nginx proxy_cache contender and the
# Varnish VCL. Tuning follows shared/BENCHMARKING.md (tcp_nopush off, high keepalive_requests,
# upstream keep-alive with HTTP/1.1 and an empty Connection header, Varnish malloc storage).

# make_content DIR — files the origin serves: f1k (1 KiB), f100k (100 KiB), f1m (1 MiB),
# keys/k00000..k0NNNN (BENCH_KEYS distinct ~1 KiB objects). Reused when already complete.
make_content() {
  local dir="$1" keys="${BENCH_KEYS:-10000}"
  mkdir -p "$dir/keys"
  [ -s "$dir/f1k" ] || head -c 1024 /dev/urandom | base64 -w 0 | head -c 1024 >"$dir/f1k"
  [ -s "$dir/f100k" ] || head -c $((100 * 1024)) /dev/urandom >"$dir/f100k"
  [ -s "$dir/f1m" ] || head -c $((1024 * 1024)) /dev/urandom >"$dir/f1m"
  local last
  last=$(printf '%s/keys/k%05d' "$dir" $((keys - 1)))
  if [ ! -s "$last" ]; then
    local body i
    body=$(head -c 1000 /dev/zero | tr '\0' 'k')
    for ((i = 0; i < keys; i++)); do
      printf '%s %05d\n' "$body" "$i" >"$(printf '%s/keys/k%05d' "$dir" "$i")"
    done
  fi
}

# write_origin_conf FILE WORKDIR PORT WWW — static nginx with an unbuffered access log.
# Every response carries Cache-Control: max-age=3600. /cold/ANYTHING answers the 1 KiB file
# (a never-seen key for every request of the cold-miss test).
write_origin_conf() {
  local f="$1" w="$2" port="$3" www="$4"
  mkdir -p "$w/tmp" "$w/logs"
  cat >"$f" <<EOF
worker_processes 1;
pid $w/nginx.pid;
error_log $w/logs/error.log warn;
events { worker_connections 4096; }
http {
    default_type application/octet-stream;
    access_log $w/logs/access.log;
    client_body_temp_path $w/tmp/body;
    proxy_temp_path $w/tmp/proxy;
    fastcgi_temp_path $w/tmp/fastcgi;
    uwsgi_temp_path $w/tmp/uwsgi;
    scgi_temp_path $w/tmp/scgi;
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    server {
        listen 127.0.0.1:$port;
        root $www;
        add_header Cache-Control "max-age=3600" always;
        location /cold/ { try_files /f1k =404; }
    }
}
EOF
}

# write_nginx_proxy_conf FILE WORKDIR PORT ORIGIN_PORT — nginx proxy_cache in front of the origin,
# BENCH_NGINX_WORKERS worker processes (default auto = one per core).
write_nginx_proxy_conf() {
  local f="$1" w="$2" port="$3" oport="$4"
  mkdir -p "$w/tmp" "$w/logs" "$w/cache"
  cat >"$f" <<EOF
worker_processes ${BENCH_NGINX_WORKERS:-auto};
pid $w/nginx.pid;
error_log $w/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $w/tmp/body;
    proxy_temp_path $w/tmp/proxy;
    fastcgi_temp_path $w/tmp/fastcgi;
    uwsgi_temp_path $w/tmp/uwsgi;
    scgi_temp_path $w/tmp/scgi;
    sendfile ${BENCH_NGINX_SENDFILE:-on};
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    proxy_cache_path $w/cache levels=1:2 keys_zone=bench:64m max_size=4g inactive=2h use_temp_path=off;
    upstream origin {
        server 127.0.0.1:$oport;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
        }
    }
}
EOF
}

# write_varnish_vcl FILE ORIGIN_PORT — the built-in VCL does the rest (TTL from max-age).
write_varnish_vcl() {
  cat >"$1" <<EOF
vcl 4.1;
backend origin {
    .host = "127.0.0.1";
    .port = "$2";
}
EOF
}
