//! Every seed, and every input a fuzzer once failed on (kept in
//! `fuzz/regressions/<target>/`), run through its target on the stable
//! toolchain in `make test`: a fixed crash stays fixed.

use std::path::{Path, PathBuf};

use sextant_fuzzing::{TARGETS, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn every_target_has_seeds_and_a_cargo_fuzz_target() {
    for target in TARGETS {
        assert!(!seeds::of(target.name).is_empty(), "{} has no seeds", target.name);
        let file = fuzz_dir().join("fuzz_targets").join(format!("{}.rs", target.name));
        let source = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            source.contains(&format!("sextant_fuzzing::{}(", target.name)),
            "{} does not call sextant_fuzzing::{}",
            file.display(),
            target.name
        );
    }
}

#[test]
fn seeds_pass_their_targets() {
    for target in TARGETS {
        for seed in seeds::of(target.name) {
            (target.run)(&seed);
        }
    }
}

#[test]
fn seeds_are_valid_requests() {
    // A seed that the first decoding step refuses would start the fuzzer
    // at the framing instead of the mapping.
    use sextant_gateway::convert::{otlp, remote_write};
    for seed in seeds::of("remote_write") {
        remote_write::decode(&seed, 1 << 20).unwrap();
    }
    for seed in seeds::of("otlp_protobuf") {
        otlp::decode(&seed, otlp::Encoding::Protobuf).unwrap();
    }
    for seed in seeds::of("otlp_json") {
        otlp::decode(&seed, otlp::Encoding::Json).unwrap();
    }
    for seed in seeds::of("promql") {
        promql_parser::parser::parse(std::str::from_utf8(&seed).unwrap()).unwrap();
    }
}

#[test]
fn kept_crash_inputs_pass_their_targets() {
    let mut replayed = 0;
    for target in TARGETS {
        let dir = fuzz_dir().join("regressions").join(target.name);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            eprintln!("{}: {}", target.name, path.display());
            (target.run)(&input);
            replayed += 1;
        }
    }
    eprintln!("{replayed} kept inputs replayed");
}
