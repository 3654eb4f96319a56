-- wrk script: each request asks for one of BENCH_KEYS distinct ~1 KiB objects, picked uniformly
-- at random (/keys/k00000 ... /keys/k09999 for the default 10,000). Used by scripts/bench.sh.
local keys = tonumber(os.getenv("BENCH_KEYS") or "10000")
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", os.time() * 1000 + counter)
end

function init(args)
  math.randomseed(seed or os.time())
end

function request()
  return wrk.format("GET", string.format("/keys/k%05d", math.random(0, keys - 1)))
end
