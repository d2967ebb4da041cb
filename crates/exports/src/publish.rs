//! Rendering an export into a file and publishing it: the renderer writes to
//! a scratch file on local disk (so memory stays bounded however big the
//! file), hashing it as it goes; the file is then uploaded to the object
//! store in parts, which the store makes visible only when the last part is
//! in. No reader ever sees a partial file, and a render that fails or is
//! stopped leaves nothing behind (the scratch file is deleted on drop).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::formats::Contents;
use crate::render::{Rows, Source};

/// Bytes per uploaded part (S3 wants at least 5 MiB but the last).
const PART: usize = 8 << 20;

/// Told rows written as the render goes; its `Err` stops the render.
pub type Report = Box<dyn FnMut(u64) -> std::io::Result<()> + Send>;

#[derive(Debug)]
pub struct Published {
    pub size: u64,
    pub sha256: String,
    pub rows: u64,
}

#[derive(Debug)]
pub enum Error {
    /// The caller stopped the render.
    Stopped,
    Render(anyhow::Error),
    Store(anyhow::Error),
}

/// A writer that counts and hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renders `contents` of `analysis` and publishes the file at `key`.
pub async fn publish(
    store: &Arc<dyn ObjectStore>,
    scratch: PathBuf,
    key: &str,
    analysis: impl Source + Send + 'static,
    contents: Contents,
    mut report: Report,
) -> Result<Published, Error> {
    let started = std::time::Instant::now();
    let rendered = tokio::task::spawn_blocking(move || {
        // Renderers wrap errors their own way; this says whether the caller stopped it.
        let stopped = std::cell::Cell::new(false);
        let mut report = |rows| {
            let result = report(rows);
            stopped.set(stopped.get() || result.is_err());
            result
        };
        let mut file = tempfile::NamedTempFile::new_in(&scratch).map_err(|e| Error::Render(e.into()))?;
        let (size, hasher, rows) = {
            let mut out = Hashing {
                inner: BufWriter::with_capacity(1 << 20, file.as_file_mut()),
                hasher: Sha256::new(),
                size: 0,
            };
            let mut rows = Rows::new(&mut report);
            let written = contents.write(&analysis, &mut out, &mut rows, &scratch);
            let rows = rows.written();
            if stopped.get() {
                return Err(Error::Stopped);
            }
            written.map_err(Error::Render)?;
            out.flush().map_err(|e| Error::Render(e.into()))?;
            (out.size, out.hasher, rows)
        };
        let published = Published {
            size,
            sha256: hex(&hasher.finalize()),
            rows,
        };
        Ok((file, published))
    })
    .await
    .map_err(|e| Error::Render(anyhow::anyhow!("the renderer panicked: {e}")))?;
    let (file, published) = rendered?;
    let rendered_in = started.elapsed();
    upload(store, key, file.path()).await.map_err(Error::Store)?;
    tracing::info!(
        key,
        rows = published.rows,
        bytes = published.size,
        render_ms = rendered_in.as_millis() as u64,
        store_ms = (started.elapsed() - rendered_in).as_millis() as u64,
        "published"
    );
    Ok(published)
}

async fn upload(store: &Arc<dyn ObjectStore>, key: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let mut upload = WriteMultipart::new_with_chunk_size(store.put_multipart(&Path::from(key)).await?, PART);
    let mut reader = tokio::fs::File::open(file).await?;
    let mut buf = vec![0; PART];
    let copied: anyhow::Result<()> = async {
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            upload.wait_for_capacity(2).await?;
            upload.write(&buf[..n]);
        }
    }
    .await;
    match copied {
        Ok(()) => {
            upload.finish().await?;
            Ok(())
        }
        Err(error) => {
            let _ = upload.abort().await;
            Err(error)
        }
    }
}
