//! Dashboards: a tenant's named grids of metric panels, stored whole and
//! versioned like alert rules (an update or a delete names the version it was
//! made from). The service checks every panel's query as a query would be
//! checked, and that its range fits the query limits, so a saved dashboard
//! always draws.

pub mod store;

use sextant_common::{ErrorCode, db};
use sextant_proto::analytics::v1 as pb;
use sqlx::PgPool;
use tonic::Status;
use uuid::Uuid;

use crate::convert::{self, invalid, page_of, page_size};
use crate::metrics::store::read::Limits;
use crate::model::{Micros, SECOND};
use crate::versioned::{self, Changed};
use store::Row;

/// What a database failure names, for the caller.
const STORE: &str = "the dashboard store";

/// Panels one dashboard holds at most.
pub const MAX_PANELS: usize = 24;
/// Characters in a title at most (a dashboard's or a panel's).
pub const MAX_TITLE: usize = 200;
/// Characters in a description at most.
pub const MAX_DESCRIPTION: usize = 2000;
/// The grid's columns; a panel is at most this wide.
pub const COLUMNS: u32 = 12;
/// A panel's height in rows at most, and the lowest row it may start on.
pub const MAX_HEIGHT: u32 = 24;
pub const MAX_ROW: u32 = 1000;
/// The longest range a dashboard shows: 366 days.
pub const MAX_RANGE: Micros = 366 * 24 * 3600 * SECOND;

#[derive(Clone)]
pub struct Dashboards {
    pub pool: PgPool,
    pub limits: Limits,
}

fn not_found() -> Status {
    ErrorCode::NotFound.status("no such dashboard")
}

/// A dashboard id; anything that is not one names no dashboard of the caller's (404).
fn dashboard_id(id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id).map_err(|_| not_found())
}

fn dashboard_pb(row: &Row) -> pb::Dashboard {
    pb::Dashboard {
        id: row.id.to_string(),
        spec: Some(row.spec()),
        created_at: Some(convert::offset_timestamp(row.created_at)),
        updated_at: Some(convert::offset_timestamp(row.updated_at)),
        version: u64::try_from(row.version).unwrap_or(0),
    }
}

/// A text field: at most `max` characters, no NUL.
fn text(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.chars().count() > max {
        return Err(invalid(format!("{field} must be at most {max} characters")));
    }
    if value.contains('\0') {
        return Err(invalid(format!("{field} must not contain U+0000 (NUL)")));
    }
    Ok(())
}

impl Dashboards {
    /// The spec, checked; `Err` names the first field that is wrong.
    pub fn check(&self, spec: Option<pb::DashboardSpec>) -> Result<pb::DashboardSpec, Status> {
        let spec = spec.ok_or_else(|| invalid("spec is required"))?;
        if spec.title.trim().is_empty() {
            return Err(invalid("title must not be empty"));
        }
        text("title", &spec.title, MAX_TITLE)?;
        text("description", &spec.description, MAX_DESCRIPTION)?;
        let range = spec
            .range
            .as_ref()
            .and_then(convert::duration)
            .filter(|r| *r >= 60 * SECOND && *r <= MAX_RANGE && r % SECOND == 0)
            .ok_or_else(|| invalid("range must be a whole number of seconds, from 60s to 366 days"))?;
        if spec.panels.len() > MAX_PANELS {
            return Err(invalid(format!("panels holds at most {MAX_PANELS} panels")));
        }
        for (i, panel) in spec.panels.iter().enumerate() {
            self.check_panel(i, panel, range)?;
        }
        Ok(spec)
    }

    fn check_panel(&self, i: usize, panel: &pb::Panel, range: Micros) -> Result<(), Status> {
        let at = |message: String| invalid(format!("panels[{i}].{message}"));
        text(&format!("panels[{i}].title"), &panel.title, MAX_TITLE)?;
        if matches!(
            pb::PanelKind::try_from(panel.kind),
            Err(_) | Ok(pb::PanelKind::Unspecified)
        ) {
            return Err(at("kind must be one of line, area, bar, stat".into()));
        }
        let query = panel.query.clone().ok_or_else(|| at("query is required".into()))?;
        if query.range.is_some() {
            return Err(at("query must not carry a range: the dashboard's applies".into()));
        }
        let shape = convert::query_shape(query).map_err(|e| at(e.message().to_owned()))?;
        let buckets = range.unsigned_abs().div_ceil(shape.bucket.unsigned_abs());
        if buckets > self.limits.max_buckets {
            return Err(at(format!(
                "query.bucket gives {buckets} buckets over the dashboard's range; at most {}",
                self.limits.max_buckets
            )));
        }
        if !(1..=COLUMNS).contains(&panel.width) || panel.x + panel.width > COLUMNS {
            return Err(at(format!(
                "x and width must fit the {COLUMNS} columns (width at least 1, x + width at most {COLUMNS})"
            )));
        }
        if !(1..=MAX_HEIGHT).contains(&panel.height) || panel.y > MAX_ROW {
            return Err(at(format!(
                "height must be from 1 to {MAX_HEIGHT}, and y at most {MAX_ROW}"
            )));
        }
        Ok(())
    }

    pub async fn create(&self, tenant: &str, r: pb::CreateDashboardRequest) -> Result<pb::Dashboard, Status> {
        let spec = self.check(r.spec)?;
        let row = store::create(&self.pool, tenant, &spec)
            .await
            .map_err(db::unavailable(STORE))?
            .ok_or_else(|| {
                ErrorCode::FailedPrecondition.status(format!(
                    "a tenant holds at most {} dashboards: delete one first",
                    store::MAX_PER_TENANT
                ))
            })?;
        Ok(dashboard_pb(&row))
    }

    pub async fn get(&self, tenant: &str, r: pb::GetDashboardRequest) -> Result<pb::Dashboard, Status> {
        let id = dashboard_id(&r.id)?;
        let row = store::get(&self.pool, tenant, id)
            .await
            .map_err(db::unavailable(STORE))?;
        row.map(|r| dashboard_pb(&r)).ok_or_else(not_found)
    }

    pub async fn list(&self, tenant: &str, r: pb::ListDashboardsRequest) -> Result<pb::ListDashboardsResponse, Status> {
        let page = r.page.unwrap_or_default();
        let size = page_size(page.page_size)?;
        let after = match page.cursor.as_str() {
            "" => None,
            c => Some(Uuid::parse_str(c).map_err(|_| invalid("page.cursor is malformed"))?),
        };
        let rows = store::list(&self.pool, tenant, after, size + 1)
            .await
            .map_err(db::unavailable(STORE))?;
        let (rows, page) = page_of(rows, size, |last| last.id.to_string());
        Ok(pb::ListDashboardsResponse {
            dashboards: rows.iter().map(dashboard_pb).collect(),
            page: Some(page),
        })
    }

    pub async fn update(&self, tenant: &str, r: pb::UpdateDashboardRequest) -> Result<pb::Dashboard, Status> {
        let id = dashboard_id(&r.id)?;
        let spec = self.check(r.spec)?;
        let expected = i64::try_from(r.expected_version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| invalid("expected_version is required: the version the update was made from"))?;
        match store::update(&self.pool, tenant, id, &spec, expected)
            .await
            .map_err(db::unavailable(STORE))?
        {
            Changed::Done(row) => Ok(dashboard_pb(&row)),
            Changed::NotFound => Err(not_found()),
            Changed::Stale(current) => Err(versioned::stale("dashboard", current, expected)),
        }
    }

    pub async fn delete(&self, tenant: &str, r: pb::DeleteDashboardRequest) -> Result<(), Status> {
        let id = dashboard_id(&r.id)?;
        let expected = match r.expected_version {
            0 => None,
            v => Some(i64::try_from(v).map_err(|_| invalid("expected_version is out of range"))?),
        };
        match store::delete(&self.pool, tenant, id, expected)
            .await
            .map_err(db::unavailable(STORE))?
        {
            Changed::Done(()) => Ok(()),
            Changed::NotFound => Err(not_found()),
            Changed::Stale(current) => Err(versioned::stale("dashboard", current, expected.unwrap_or(0))),
        }
    }
}
