//! Writes each fuzz target's seeds to `DIR/<target>/seed-<n>`:
//! `sextant-fuzz-seeds DIR` (run by `make fuzz` before fuzzing).

use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).context("usage: sextant-fuzz-seeds DIR")?);
    for target in sextant_fuzzing::TARGETS {
        let into = dir.join(target.name);
        std::fs::create_dir_all(&into).with_context(|| format!("creating {}", into.display()))?;
        for (n, seed) in sextant_fuzzing::seeds::of(target.name).iter().enumerate() {
            std::fs::write(into.join(format!("seed-{n}")), seed)?;
        }
    }
    Ok(())
}
