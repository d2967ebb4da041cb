//! Which file a format spec makes: its checks, content type, file name and
//! bytes (through `render`). Protobuf names in, domain out.

use sextant_proto::analytics::v1 as apb;
use sextant_proto::exports::v1 as pb;

use std::io::{Seek, Write};
use std::path::Path;

use crate::render::csv::Section;
use crate::render::{self, Counts, MarkupFree, Rows, Source};

/// A checked format spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sarif,
    Html,
    Csv(Section),
    Xlsx,
    Json,
}

impl Format {
    /// `Err` says what is wrong with the spec, for the client.
    pub fn parse(spec: &pb::FormatSpec) -> Result<Self, String> {
        let section = pb::CsvSection::try_from(spec.csv_section).map_err(|_| "unknown csv_section".to_owned())?;
        let format = match pb::ExportFormat::try_from(spec.format).unwrap_or_default() {
            pb::ExportFormat::Sarif => Self::Sarif,
            pb::ExportFormat::Html => Self::Html,
            pb::ExportFormat::Xlsx => Self::Xlsx,
            pb::ExportFormat::Json => Self::Json,
            pb::ExportFormat::Csv => Self::Csv(match section {
                pb::CsvSection::Unspecified | pb::CsvSection::Combined => Section::Combined,
                pb::CsvSection::Summary => Section::Summary,
                pb::CsvSection::Metrics => Section::Metrics,
                pb::CsvSection::Findings => Section::Findings,
                pb::CsvSection::Series => Section::Series,
            }),
            pb::ExportFormat::Zip => return Err("zip is a batch of formats: create a batch export".into()),
            pb::ExportFormat::Unspecified => {
                return Err("format must be one of sarif, html, csv, xlsx, json".into());
            }
        };
        if section != pb::CsvSection::Unspecified && !matches!(format, Self::Csv(_)) {
            return Err("csv_section applies only to the csv format".into());
        }
        Ok(format)
    }

    pub fn spec(self) -> pb::FormatSpec {
        let (format, section) = match self {
            Self::Sarif => (pb::ExportFormat::Sarif, pb::CsvSection::Unspecified),
            Self::Html => (pb::ExportFormat::Html, pb::CsvSection::Unspecified),
            Self::Xlsx => (pb::ExportFormat::Xlsx, pb::CsvSection::Unspecified),
            Self::Json => (pb::ExportFormat::Json, pb::CsvSection::Unspecified),
            Self::Csv(s) => (
                pb::ExportFormat::Csv,
                match s {
                    Section::Summary => pb::CsvSection::Summary,
                    Section::Metrics => pb::CsvSection::Metrics,
                    Section::Findings => pb::CsvSection::Findings,
                    Section::Series => pb::CsvSection::Series,
                    Section::Combined => pb::CsvSection::Combined,
                },
            ),
        };
        pb::FormatSpec {
            format: format as i32,
            csv_section: section as i32,
        }
    }

    /// A stable name, e.g. `csv:findings` (also the key of the stored spec).
    pub fn name(self) -> String {
        match self {
            Self::Sarif => "sarif".into(),
            Self::Html => "html".into(),
            Self::Xlsx => "xlsx".into(),
            Self::Json => "json".into(),
            Self::Csv(s) => format!("csv:{}", s.name()),
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.split_once(':') {
            Some(("csv", s)) => Self::Csv(Section::parse(s)?),
            None => match name {
                "sarif" => Self::Sarif,
                "html" => Self::Html,
                "xlsx" => Self::Xlsx,
                "json" => Self::Json,
                _ => return None,
            },
            _ => return None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Sarif => "application/sarif+json",
            Self::Html => "text/html; charset=utf-8",
            Self::Csv(_) => "text/csv; charset=utf-8",
            Self::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Self::Json => "application/json",
        }
    }

    /// The file's name for an analysis.
    pub fn filename(self, analysis: &str) -> String {
        match self {
            Self::Sarif => format!("analysis-{analysis}.sarif"),
            Self::Html => format!("analysis-{analysis}.html"),
            Self::Xlsx => format!("analysis-{analysis}.xlsx"),
            Self::Json => format!("analysis-{analysis}.json"),
            Self::Csv(Section::Combined) => format!("analysis-{analysis}.csv"),
            Self::Csv(s) => format!("analysis-{analysis}-{}.csv", s.name()),
        }
    }

    /// The rows [`Format::write`] counts for this format, from the
    /// analysis' heading and counts.
    pub fn rows(self, heading: &apb::Analysis, counts: Counts) -> u64 {
        match self {
            Self::Csv(section) => render::csv::rows(heading, counts, section),
            _ => render::rows(heading, counts),
        }
    }

    /// Writes the file to `out`, counting rows in `written`. CPU-bound:
    /// call it off the async threads.
    pub fn write(
        self,
        analysis: &dyn Source,
        mut out: impl Write + Send,
        written: &mut Rows<'_>,
    ) -> anyhow::Result<()> {
        match self {
            Self::Sarif => render::sarif::write(analysis, env!("CARGO_PKG_VERSION"), MarkupFree(&mut out))?,
            Self::Html => render::html::write(analysis, &mut out)?,
            Self::Json => render::json::write(analysis, MarkupFree(&mut out))?,
            Self::Xlsx => return Ok(render::xlsx::write(analysis, out, written)?),
            Self::Csv(section) => return Ok(render::csv::write(analysis, section, out, written)?),
        }
        // The formats above render whole: their rows are written at once.
        written.add(self.rows(analysis.heading(), analysis.counts()))?;
        Ok(())
    }

    /// The file's bytes.
    pub fn render(self, analysis: &dyn Source) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        render::quietly(|rows| self.write(analysis, &mut out, rows))?;
        Ok(out)
    }
}

/// What one export holds: one format, or several as a ZIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    One(Format),
    Batch(Vec<Format>),
}

impl Contents {
    pub fn formats(&self) -> &[Format] {
        match self {
            Self::One(f) => std::slice::from_ref(f),
            Self::Batch(formats) => formats,
        }
    }

    /// The rows [`Contents::write`] counts.
    pub fn rows(&self, heading: &apb::Analysis, counts: Counts) -> u64 {
        self.formats().iter().map(|f| f.rows(heading, counts)).sum()
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Self::One(f) => f.content_type(),
            Self::Batch(_) => "application/zip",
        }
    }

    pub fn filename(&self, analysis: &str) -> String {
        match self {
            Self::One(f) => f.filename(analysis),
            Self::Batch(_) => format!("analysis-{analysis}.zip"),
        }
    }

    /// Writes the file to `out`, counting rows in `written`. A batch's files
    /// are rendered one at a time into files in `scratch` (deleted when
    /// dropped), then copied into the ZIP.
    pub fn write(
        &self,
        analysis: &dyn Source,
        out: impl Write + Send,
        written: &mut Rows<'_>,
        scratch: &Path,
    ) -> anyhow::Result<()> {
        match self {
            Self::One(f) => f.write(analysis, out, written),
            Self::Batch(formats) => {
                let entries = formats
                    .iter()
                    .map(|f| {
                        let mut file = tempfile::tempfile_in(scratch)?;
                        let mut buffered = std::io::BufWriter::new(&mut file);
                        f.write(analysis, &mut buffered, written)?;
                        buffered.flush()?;
                        drop(buffered);
                        file.rewind()?;
                        Ok(render::zip::Entry {
                            name: f.filename(&analysis.heading().id),
                            content_type: f.content_type(),
                            content: std::io::BufReader::new(file),
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                render::zip::write(entries, out)?;
                Ok(())
            }
        }
    }

    /// The file's bytes.
    pub fn render(&self, analysis: &dyn Source) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        render::quietly(|rows| self.write(analysis, &mut out, rows, &std::env::temp_dir()))?;
        Ok(out)
    }
}
