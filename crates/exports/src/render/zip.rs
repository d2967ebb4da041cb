//! ZIP: several files of one analysis in one archive, written as a stream
//! (the writer needs no seeking, so the archive can go straight to its
//! destination), with a `manifest.json` last: every file's name, size,
//! SHA-256 and content type, so a reader can check what it unpacked.

use std::io::{Read, Write};

use serde_json::json;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

/// One file of the archive, read as it is written in.
pub struct Entry<R> {
    pub name: String,
    pub content_type: &'static str,
    pub content: R,
}

pub const MANIFEST: &str = "manifest.json";

/// Writes `entries`, then the manifest, as a ZIP to `out`.
pub fn write<R: Read>(entries: Vec<Entry<R>>, out: impl Write) -> zip::result::ZipResult<()> {
    let mut archive = zip::ZipWriter::new_stream(out);
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    let mut files = Vec::with_capacity(entries.len());
    let mut buf = vec![0; 1 << 16];
    for mut entry in entries {
        archive.start_file(entry.name.as_str(), options)?;
        let (mut hash, mut size) = (Sha256::new(), 0);
        loop {
            let n = entry.content.read(&mut buf)?;
            if n == 0 {
                break;
            }
            archive.write_all(&buf[..n])?;
            hash.update(&buf[..n]);
            size += n;
        }
        let digest = hash.finalize();
        files.push(json!({
            "name": entry.name,
            "size": size,
            "sha256": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "content_type": entry.content_type,
        }));
    }
    let manifest =
        serde_json::to_vec_pretty(&json!({ "format": "sextant.export-batch", "version": 1, "files": files }))
            .expect("a manifest serialises");
    archive.start_file(MANIFEST, options)?;
    archive.write_all(&manifest)?;
    archive.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};

    use super::*;

    #[test]
    fn every_file_matches_its_manifest_entry() {
        let entries = vec![
            Entry {
                name: "analysis.csv".into(),
                content_type: "text/csv; charset=utf-8",
                content: b"metric,count\ncpu,3\n".as_slice(),
            },
            Entry {
                name: "analysis.json".into(),
                content_type: "application/json",
                content: [b'{'; 100_000].as_slice(),
            },
        ];
        let mut out = Vec::new();
        let contents: Vec<&[u8]> = entries.iter().map(|e| e.content).collect();
        write(entries, &mut out).unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(out)).unwrap();
        let mut manifest = String::new();
        archive
            .by_name(MANIFEST)
            .unwrap()
            .read_to_string(&mut manifest)
            .unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let files = manifest["files"].as_array().unwrap();
        assert_eq!(files.len(), 2);
        for (file, content) in files.iter().zip(contents) {
            let mut bytes = Vec::new();
            archive
                .by_name(file["name"].as_str().unwrap())
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            assert_eq!(bytes, content);
            assert_eq!(file["size"], bytes.len());
            let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(file["sha256"], digest.as_str());
        }
        assert_eq!(archive.len(), 3);
    }
}
