//! Sextant's gRPC contracts, compiled from `proto/` for every crate.
//!
//! Each package is versioned (`sextant.jobs.v1`); a breaking change means a new
//! `v2` package beside the old one, never an edit in place.

#![allow(clippy::all, missing_docs)]

pub mod common {
    pub mod v1 {
        tonic::include_proto!("sextant.common.v1");
    }
}

pub mod jobs {
    pub mod v1 {
        tonic::include_proto!("sextant.jobs.v1");
    }
}

pub mod analytics {
    pub mod v1 {
        tonic::include_proto!("sextant.analytics.v1");
    }
}

pub mod exports {
    pub mod v1 {
        tonic::include_proto!("sextant.exports.v1");
    }
}

/// Prometheus remote-write 1.0's messages (`proto/prometheus/remote.proto`).
pub mod prometheus {
    tonic::include_proto!("prometheus");
}

/// Every Sextant package's file descriptors, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sextant_descriptor.bin"));

/// Fully qualified service names, as the gRPC health service reports them.
pub mod service_names {
    pub const ANALYTICS: &str = "sextant.analytics.v1.AnalyticsService";
    pub const JOBS: &str = "sextant.jobs.v1.JobService";
    pub const EXPORTS: &str = "sextant.exports.v1.ExportService";
}
