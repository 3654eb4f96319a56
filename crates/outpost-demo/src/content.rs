//! The demo origin's fixed content: fingerprinted assets, the deterministic binary payloads (10 MiB
//! file, HLS segments) and the HLS playlist.
//!
//! Binary payloads are a pure function of (resource, offset), generated once per process and shared,
//! so every response — from the origin or through any number of caches — is byte-identical and tests
//! can recompute what they should have received.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Path of the 10 MiB download.
pub const LARGE_PATH: &str = "/large/10mb.bin";
/// Size of the 10 MiB download.
pub const LARGE_LEN: usize = 10 * 1024 * 1024;
/// Number of HLS segments listed in the playlist.
pub const SEGMENT_COUNT: usize = 5;
/// Size of one HLS segment.
pub const SEGMENT_LEN: usize = 256 * 1024;
/// Path of the fingerprinted script.
pub const APP_JS_PATH: &str = "/assets/app.3f9a2c.js";
/// Path of the fingerprinted stylesheet.
pub const STYLE_CSS_PATH: &str = "/assets/style.8d1e4b.css";

/// Last-Modified of everything that never changes (a fixed instant so it is stable across restarts).
pub fn static_last_modified() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_704_067_200) // 2024-01-01T00:00:00Z
}

/// The fingerprinted script: polls `/api/time` so the page shows the origin's counter moving (or not).
pub const APP_JS: &str = r#"// Outpost demo script (fingerprinted: cached for a year, immutable).
(function () {
  function tick() {
    fetch('/api/time').then(function (r) {
      var cache = r.headers.get('x-cache') || r.headers.get('cache-status') || 'n/a';
      return r.json().then(function (j) {
        var el = document.getElementById('api-time');
        if (el) {
          el.textContent = 'unix_time=' + j.unix_time + '  origin_served=' + j.served + '  cache=' + cache;
        }
      });
    }).catch(function () {});
  }
  tick();
  setInterval(tick, 2000);
})();
"#;

/// The fingerprinted stylesheet.
pub const STYLE_CSS: &str = r#"/* Outpost demo stylesheet (fingerprinted: cached for a year, immutable). */
body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #1b1f24; }
h1 { font-size: 1.6rem; }
code, pre { background: #f3f4f6; padding: 0.1rem 0.3rem; border-radius: 3px; }
table { border-collapse: collapse; width: 100%; }
td { padding: 0.3rem 0.5rem; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
.stamp { font-weight: bold; color: #b45309; }
"#;

/// One byte of a deterministic payload: a multiplicative hash of (seed, offset).
fn pattern_byte(seed: u64, offset: u64) -> u8 {
    let x = offset
        .wrapping_add(seed.wrapping_mul(0x1000_0000_01B3))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

/// `len` deterministic bytes for `seed`; with `ts_sync` every 188-byte packet starts with the MPEG-TS
/// sync byte 0x47 so the segments look like transport streams to a hex dump.
fn generate(seed: u64, len: usize, ts_sync: bool) -> Bytes {
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        if ts_sync && i % 188 == 0 {
            out.push(0x47);
        } else {
            out.push(pattern_byte(seed, i as u64));
        }
    }
    Bytes::from(out)
}

/// The 10 MiB download, generated on first use.
pub fn large_body() -> Bytes {
    static LARGE: OnceLock<Bytes> = OnceLock::new();
    LARGE
        .get_or_init(|| generate(0x0010_4D1B, LARGE_LEN, false))
        .clone()
}

/// HLS segment `n` (`0..SEGMENT_COUNT`), generated on first use.
pub fn segment_body(n: usize) -> Option<Bytes> {
    static SEGMENTS: OnceLock<Vec<Bytes>> = OnceLock::new();
    SEGMENTS
        .get_or_init(|| {
            (0..SEGMENT_COUNT)
                .map(|i| generate(0x5E6 + i as u64, SEGMENT_LEN, true))
                .collect()
        })
        .get(n)
        .cloned()
}

/// Parses `/video/segN.ts` into `N` when it names an existing segment.
pub fn segment_index(path: &str) -> Option<usize> {
    let n: usize = path
        .strip_prefix("/video/seg")?
        .strip_suffix(".ts")?
        .parse()
        .ok()?;
    // Reject spellings such as "seg01.ts" so each segment has exactly one URL (one cache key).
    if format!("/video/seg{n}.ts") != path || n >= SEGMENT_COUNT {
        return None;
    }
    Some(n)
}

/// The HLS VOD playlist listing every segment.
pub fn playlist() -> String {
    let mut s = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for i in 0..SEGMENT_COUNT {
        s.push_str("#EXTINF:2.000,\n");
        s.push_str(&format!("/video/seg{i}.ts\n"));
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

/// The full body the demo origin serves for a fixed-content `path` (assets, the 10 MiB file, the
/// playlist, segments), or `None` for dynamic or unknown paths. Lets end-to-end tests check that
/// bytes arriving through the CDN are exactly the origin's.
pub fn static_body(path: &str) -> Option<Bytes> {
    match path {
        APP_JS_PATH => Some(Bytes::from_static(APP_JS.as_bytes())),
        STYLE_CSS_PATH => Some(Bytes::from_static(STYLE_CSS.as_bytes())),
        LARGE_PATH => Some(large_body()),
        "/video/playlist.m3u8" => Some(Bytes::from(playlist())),
        _ => segment_body(segment_index(path)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_paths_are_canonical() {
        assert_eq!(segment_index("/video/seg0.ts"), Some(0));
        assert_eq!(segment_index("/video/seg4.ts"), Some(4));
        assert_eq!(segment_index("/video/seg5.ts"), None);
        assert_eq!(segment_index("/video/seg01.ts"), None);
        assert_eq!(segment_index("/video/seg+1.ts"), None);
        assert_eq!(segment_index("/video/seg.ts"), None);
    }

    #[test]
    fn payloads_are_deterministic_and_distinct() {
        assert_eq!(large_body().len(), LARGE_LEN);
        assert_eq!(
            generate(0x0010_4D1B, 4096, false),
            large_body().slice(0..4096)
        );
        let (a, b) = (segment_body(0), segment_body(1));
        assert!(a.is_some() && b.is_some());
        assert_ne!(a, b);
        assert_eq!(a.as_ref().map(|s| s[0]), Some(0x47));
        assert_eq!(a.as_ref().map(|s| s[188]), Some(0x47));
        // Not a short period: two distant windows differ.
        let l = large_body();
        assert_ne!(l.slice(0..256), l.slice(1 << 20..(1 << 20) + 256));
    }

    #[test]
    fn playlist_lists_every_segment() {
        let p = playlist();
        for i in 0..SEGMENT_COUNT {
            assert!(p.contains(&format!("/video/seg{i}.ts")));
        }
        assert!(p.starts_with("#EXTM3U"));
        assert!(p.ends_with("#EXT-X-ENDLIST\n"));
    }
}
