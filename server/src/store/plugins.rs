//! Queries for the plugin registry: every version of every plugin, its component bytes and what
//! its own `describe` said, kept in the database so that every server replica serves the same.

use passage_app::plugins::{ParamView, PluginView};
use passage_plugin_host::ParamSpec;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, flag, now_ms, rfc3339};

/// A plugin version to register.
#[derive(Debug, Clone)]
pub struct NewPlugin<'a> {
    /// From `describe`.
    pub name: &'a str,
    /// From `describe`.
    pub version: &'a str,
    /// From `describe`.
    pub summary: &'a str,
    /// From `describe`.
    pub params: &'a [ParamSpec],
    /// SHA-256 of `component`, hex.
    pub sha256: &'a str,
    /// The component itself.
    pub component: &'a [u8],
    /// True for the plugins that come with Passage.
    pub shipped: bool,
    /// True when a job of it runs on every GPU of its machine (it imports `peers`).
    pub all_gpus: bool,
    /// A user name, or `system`.
    pub uploaded_by: &'a str,
}

/// A stored plugin version with what a run needs of it.
#[derive(Debug, Clone)]
pub struct PluginRecord {
    /// How it is listed.
    pub view: PluginView,
    /// Its parameters as declared.
    pub params: Vec<ParamSpec>,
}

/// What registering found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new version, with its id.
    New(i64),
    /// These very bytes were registered already, under this id.
    Known(i64),
}

const COLUMNS: &str = "id, name, version, summary, params_json, sha256, size_bytes, shipped, \
                       all_gpus, uploaded_by, created_at";

fn plugin(row: &AnyRow) -> Result<PluginRecord, StoreError> {
    let params_json: String = row.try_get("params_json")?;
    let params: Vec<ParamSpec> = serde_json::from_str(&params_json).map_err(|e| {
        StoreError::Query(sqlx::Error::Decode(
            format!("a stored plugin's parameters do not parse: {e}").into(),
        ))
    })?;
    Ok(PluginRecord {
        view: PluginView {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            summary: row.try_get("summary")?,
            sha256: row.try_get("sha256")?,
            size_bytes: row.try_get("size_bytes")?,
            shipped: flag(row, "shipped")?,
            all_gpus: flag(row, "all_gpus")?,
            uploaded_by: row.try_get("uploaded_by")?,
            created_at: rfc3339(row.try_get("created_at")?),
            params: params.iter().map(param_view).collect(),
        },
        params,
    })
}

/// A declared parameter as people see it.
pub fn param_view(spec: &ParamSpec) -> ParamView {
    ParamView {
        name: spec.name.clone(),
        summary: spec.summary.clone(),
        kind: spec.kind.as_str().into(),
        default: spec.default.to_string(),
        min: spec.min,
        max: spec.max,
        unit: spec.unit.clone(),
    }
}

impl Store {
    /// Registers a plugin version. The same bytes again are [`Registered::Known`]; another
    /// component under a registered name and version is a unique violation.
    pub async fn register_plugin(&self, new: &NewPlugin<'_>) -> Result<Registered, StoreError> {
        if let Some(id) = self.plugin_id_by_sha256(new.sha256).await? {
            return Ok(Registered::Known(id));
        }
        let params = serde_json::to_string(new.params).expect("parameters serialise");
        let row = sqlx::query(
            "INSERT INTO plugins (name, version, summary, params_json, sha256, size_bytes,
                 component, shipped, all_gpus, uploaded_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(new.name)
        .bind(new.version)
        .bind(new.summary)
        .bind(params)
        .bind(new.sha256)
        .bind(new.component.len() as i64)
        .bind(new.component.to_vec())
        .bind(new.shipped)
        .bind(new.all_gpus)
        .bind(new.uploaded_by)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await;
        match row {
            Ok(row) => Ok(Registered::New(row.try_get("id")?)),
            // Another replica registered the same bytes at the same moment.
            Err(e) => match self.plugin_id_by_sha256(new.sha256).await? {
                Some(id) => Ok(Registered::Known(id)),
                None => Err(e.into()),
            },
        }
    }

    async fn plugin_id_by_sha256(&self, sha256: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT id FROM plugins WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Every plugin version: by name, newest version first.
    pub async fn plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM plugins ORDER BY name, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(plugin).collect()
    }

    /// One plugin version.
    pub async fn plugin(&self, id: i64) -> Result<Option<PluginRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM plugins WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(plugin).transpose()
    }

    /// The newest version of the plugin called `name`.
    pub async fn newest_plugin(&self, name: &str) -> Result<Option<PluginRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM plugins WHERE name = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(plugin).transpose()
    }

    /// The component bytes of the plugin with this hash.
    pub async fn plugin_component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT component FROM plugins WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("component")).transpose()?)
    }

    /// The hashes of every registered plugin, to skip describing shipped files again.
    pub async fn plugin_hashes(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT sha256 FROM plugins")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("sha256")?)).collect()
    }
}
