//! An analysis read in parts (analytics' `ReadAnalysis` stream): its
//! heading first ([`Opened`], enough to size a render), then the rest onto
//! local disk, as the renderers' [`Source`]: the heading in memory, the findings
//! and the series each in a scratch file of length-prefixed protobuf
//! records, read back one record at a time for every pass a format makes.
//! What a render holds is one finding or one series, whatever the size of
//! the analysis; the files are deleted when the spool is dropped.

use std::fs::File;
use std::io::{BufReader, Read};
use std::marker::PhantomData;
use std::path::Path;

use futures::StreamExt as _;
use prost::Message;
use sextant_common::ErrorCode;
use sextant_proto::analytics::v1::read_analysis_response::Part;
use sextant_proto::analytics::v1::{self as apb, ReadAnalysisResponse};
use tempfile::NamedTempFile;
use tokio::io::{AsyncWriteExt, BufWriter};
use tonic::Status;

use crate::render::{Counts, Parts, Source};

pub struct Spool {
    heading: apb::Analysis,
    counts: Counts,
    findings: NamedTempFile,
    series: NamedTempFile,
}

/// Records appended to one scratch file.
struct Appender {
    file: BufWriter<tokio::fs::File>,
}

impl Appender {
    fn new(file: &NamedTempFile) -> std::io::Result<Self> {
        let file = tokio::fs::File::from_std(file.as_file().try_clone()?);
        Ok(Self {
            file: BufWriter::with_capacity(1 << 20, file),
        })
    }

    async fn append(&mut self, record: &impl Message) -> std::io::Result<()> {
        let len = u32::try_from(record.encoded_len()).map_err(std::io::Error::other)?;
        self.file.write_all(&len.to_le_bytes()).await?;
        self.file.write_all(&record.encode_to_vec()).await
    }
}

fn scratch_failed(error: std::io::Error) -> Status {
    tracing::error!(%error, "spooling the analysis failed");
    ErrorCode::Unavailable.status("the export's scratch space failed")
}

fn out_of_order() -> Status {
    ErrorCode::Internal.status("the analysis arrived out of order")
}

/// An analysis whose heading has been read: enough to size a render. The
/// rest of the stream is read only by [`Opened::spool`]; dropping this
/// stops the stream.
pub struct Opened<S> {
    pub heading: apb::Analysis,
    pub counts: Counts,
    parts: S,
}

impl<S> Opened<S>
where
    S: futures::Stream<Item = Result<ReadAnalysisResponse, Status>> + Unpin,
{
    /// Reads the first message of `parts`: the heading.
    pub async fn open(mut parts: S) -> Result<Self, Status> {
        let Some(Part::Heading(h)) = parts.next().await.transpose()?.and_then(|r| r.part) else {
            return Err(out_of_order());
        };
        let counts = Counts {
            findings: h.findings,
            errors: h.errors,
            warnings: h.warnings,
            notes: h.notes,
            series: h.series,
            buckets: h.buckets,
        };
        Ok(Self {
            heading: h.analysis.unwrap_or_default(),
            counts,
            parts,
        })
    }

    /// Reads the rest to its end into files in `scratch`; what arrives must
    /// be what the heading counted.
    pub async fn spool(self, scratch: &Path) -> Result<Spool, Status> {
        let Self {
            heading,
            counts: told,
            mut parts,
        } = self;
        let (findings, series) = (
            NamedTempFile::new_in(scratch).map_err(scratch_failed)?,
            NamedTempFile::new_in(scratch).map_err(scratch_failed)?,
        );
        let (mut to_findings, mut to_series) = (
            Appender::new(&findings).map_err(scratch_failed)?,
            Appender::new(&series).map_err(scratch_failed)?,
        );
        let mut counts = Counts::default();
        while let Some(part) = parts.next().await.transpose()? {
            match part.part {
                Some(Part::Findings(batch)) if counts.series == 0 => {
                    for f in &batch.findings {
                        counts.finding(f);
                        to_findings.append(f).await.map_err(scratch_failed)?;
                    }
                }
                Some(Part::Series(c)) => {
                    counts.series(&c);
                    to_series.append(&c).await.map_err(scratch_failed)?;
                }
                _ => return Err(out_of_order()),
            }
        }
        if counts != told {
            return Err(ErrorCode::Internal.status("the analysis arrived incomplete"));
        }
        to_findings.file.flush().await.map_err(scratch_failed)?;
        to_series.file.flush().await.map_err(scratch_failed)?;
        Ok(Spool {
            heading,
            counts,
            findings,
            series,
        })
    }
}

/// The records of a file, from its start; stops at the first error.
struct Records<T> {
    file: Option<BufReader<File>>,
    buf: Vec<u8>,
    _record: PhantomData<T>,
}

impl<T> Records<T> {
    fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: Some(BufReader::with_capacity(1 << 16, File::open(path)?)),
            buf: Vec::new(),
            _record: PhantomData,
        })
    }

    fn read(&mut self) -> Option<std::io::Result<()>> {
        let file = self.file.as_mut()?;
        let mut len = [0; 4];
        if let Err(e) = file.read_exact(&mut len) {
            return (e.kind() != std::io::ErrorKind::UnexpectedEof).then_some(Err(e));
        }
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        Some(file.read_exact(&mut self.buf))
    }
}

impl<T: Message + Default> Iterator for Records<T> {
    type Item = std::io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = self.read().map(|read| {
            read.and_then(|()| {
                T::decode(self.buf.as_slice()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })
        });
        if !matches!(record, Some(Ok(_))) {
            self.file = None;
        }
        record
    }
}

fn records<T: Message + Default + 'static>(file: &NamedTempFile) -> Parts<'static, T> {
    match Records::open(file.path()) {
        Ok(records) => Box::new(records),
        Err(error) => Box::new(std::iter::once(Err(error))),
    }
}

impl Source for Spool {
    fn heading(&self) -> &apb::Analysis {
        &self.heading
    }

    fn counts(&self) -> Counts {
        self.counts
    }

    fn findings(&self) -> Parts<'_, apb::Finding> {
        records(&self.findings)
    }

    fn series(&self) -> Parts<'_, apb::ChartSeries> {
        records(&self.series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{Contents, Format};
    use crate::render::Whole;
    use crate::render::csv::Section;

    /// The stream analytics sends for `a`: heading, batches, series.
    fn parts(a: &apb::Analysis) -> Vec<Result<ReadAnalysisResponse, Status>> {
        let part = |p| Ok(ReadAnalysisResponse { part: Some(p) });
        let mut counts = Counts::default();
        a.findings.iter().for_each(|f| counts.finding(f));
        a.series.iter().for_each(|c| counts.series(c));
        let heading = apb::AnalysisHeading {
            analysis: Some(apb::Analysis {
                findings: vec![],
                series: vec![],
                ..a.clone()
            }),
            findings: counts.findings,
            errors: counts.errors,
            warnings: counts.warnings,
            notes: counts.notes,
            series: counts.series,
            buckets: counts.buckets,
        };
        std::iter::once(part(Part::Heading(heading)))
            .chain(
                a.findings
                    .chunks(1_000)
                    .map(|c| part(Part::Findings(apb::FindingBatch { findings: c.to_vec() }))),
            )
            .chain(a.series.iter().map(|c| part(Part::Series(c.clone()))))
            .collect()
    }

    async fn spool(parts: Vec<Result<ReadAnalysisResponse, Status>>) -> Result<Spool, Status> {
        Opened::open(futures::stream::iter(parts))
            .await?
            .spool(&std::env::temp_dir())
            .await
    }

    #[tokio::test]
    async fn a_spooled_analysis_renders_every_format_as_the_whole_one_does() {
        let analysis = crate::golden::fixture();
        let spooled = spool(parts(&analysis)).await.unwrap();
        let whole = Whole::from(analysis);
        assert_eq!(spooled.counts(), whole.counts());
        let formats = vec![
            Format::Sarif,
            Format::Html,
            Format::Json,
            Format::Xlsx,
            Format::Csv(Section::Combined),
        ];
        for f in &formats {
            assert!(f.render(&spooled).unwrap() == f.render(&whole).unwrap(), "{}", f.name());
        }
        let batch = Contents::Batch(formats);
        assert!(batch.render(&spooled).unwrap() == batch.render(&whole).unwrap());
    }

    #[tokio::test]
    async fn a_stream_out_of_order_or_failed_is_refused() {
        let analysis = crate::golden::fixture();
        let mut no_heading = parts(&analysis);
        let _heading = no_heading.remove(0);
        assert_eq!(spool(no_heading).await.err().unwrap().code(), tonic::Code::Internal);
        let mut findings_after_series = parts(&analysis);
        let batch = findings_after_series.remove(1);
        findings_after_series.push(batch);
        assert_eq!(
            spool(findings_after_series).await.err().unwrap().code(),
            tonic::Code::Internal
        );
        let mut broken = parts(&analysis);
        broken.insert(5, Err(Status::unavailable("analytics went away")));
        assert_eq!(spool(broken).await.err().unwrap().code(), tonic::Code::Unavailable);
        assert_eq!(spool(vec![]).await.err().unwrap().code(), tonic::Code::Internal);
        // A stream that ends early, without an error: what the heading
        // counted did not all arrive.
        let mut short = parts(&analysis);
        let _last_series = short.pop();
        assert_eq!(spool(short).await.err().unwrap().code(), tonic::Code::Internal);
    }

    #[tokio::test]
    async fn every_pass_reads_from_the_first_record() {
        let analysis = crate::golden::fixture();
        let spooled = spool(parts(&analysis)).await.unwrap();
        for _ in 0..2 {
            let ids: Vec<String> = spooled.findings().map(|f| f.unwrap().id).collect();
            assert_eq!(ids.len(), analysis.findings.len());
            assert_eq!(ids[0], analysis.findings[0].id);
        }
        let mut series = spooled.series();
        let first = series.next().unwrap().unwrap();
        assert_eq!(
            spooled.series().next().unwrap().unwrap(),
            first,
            "a second pass beside the first"
        );
        assert_eq!(series.count() + 1, analysis.series.len());
    }
}
