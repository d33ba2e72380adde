//! Replays every input the fuzzers kept (`fuzz/corpus/<target>/`) and
//! every crash they found (`fuzz/regressions/<target>/`) through the same
//! functions the fuzz targets call, on the stable toolchain, so `./test`
//! checks them without a sanitizer build. See docs/RELIABILITY.md.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("statsd_line", lovebeat::fuzz_targets::statsd_line),
    ("datagram", lovebeat::fuzz_targets::datagram),
    ("database", lovebeat::fuzz_targets::database),
    ("config", lovebeat::fuzz_targets::config),
    ("pattern", lovebeat::fuzz_targets::pattern),
    ("duration", lovebeat::fuzz_targets::duration),
    ("schedule", lovebeat::fuzz_targets::schedule),
    ("http_request", lovebeat::fuzz_targets::http_request),
];

/// Runs `target` on every file in `dir`; returns how many.
fn replay(dir: &Path, target: Target) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let result = std::panic::catch_unwind(|| target(&data));
        assert!(
            result.is_ok(),
            "{} fails on {}",
            dir.display(),
            path.display()
        );
        n += 1;
    }
    n
}

#[test]
fn every_kept_input_and_every_found_crash_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let corpus = replay(&root.join("corpus").join(name), *target);
        let crashes = replay(&root.join("regressions").join(name), *target);
        assert!(corpus > 0, "fuzz/corpus/{name} is empty");
        eprintln!("{name}: {corpus} corpus inputs, {crashes} regressions");
    }
}
