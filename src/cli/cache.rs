//! `prospeo cache`: what the response cache holds, deleting it, and exporting it (Parquet by
//! default): the local file's, or with `--coordinator` the answers the coordinator's workers
//! share (its `answers` table), in the same formats.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion_prospeo::api::RecordOutcome;
use datafusion_prospeo::api::builder::ENV_BASE_URL;
use datafusion_prospeo::cache::{CacheEntry, CacheKey, CacheStats, ResponseCache, remove_file};
use datafusion_prospeo::coordinator::{Coordinator, CoordinatorUrl, ENV_COORDINATOR};
use datafusion_prospeo::datafusion::options::ENV_CACHE;
use datafusion_prospeo::output::{DEFAULT_PREFIX, OutputSchema};
use datafusion_prospeo::{Datapoint, EnrichOptions, Error};

use super::coordinator::Hidden;
use super::output::{Output, OutputFormat};
use super::{CliError, api_error};

/// Entries per exported batch: memory stays bounded whatever the cache's size.
const EXPORT_PAGE: usize = 8192;

/// Columns of `OutputSchema::flatten` that the export replaces with the cache's own: the status
/// and cost as stored, and `error`, which is always empty for a stored answer.
const REPLACED_COLUMNS: [&str; 3] = ["status", "cost", "error"];

/// Options of `prospeo cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
    /// The cache file (also PROSPEO_CACHE). Default: the file `enrich` uses,
    /// `prospeo/responses.redb` in the platform's cache directory (`~/.cache` on Linux,
    /// `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows), or the file of its own of the
    /// API at --base-url when that is not the vendor's.
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        conflicts_with = "coordinator"
    )]
    pub cache: Option<PathBuf>,
    /// The answers the coordinator's workers share instead of a file:
    /// postgres://user@host[:port]/database (also PROSPEO_COORDINATOR; when both it and
    /// PROSPEO_CACHE are set, say which with --cache or --coordinator). The password comes from
    /// PGPASSWORD, a PGPASSFILE or ~/.pgpass, never from the URL.
    #[arg(long, value_name = "URL", global = true)]
    pub coordinator: Option<Hidden>,
    /// The API whose answers to work on (also PROSPEO_BASE_URL): an API other than the vendor's
    /// (a sandbox, a proxy) has a default file of its own, and answers of its own in the
    /// coordinator, as `enrich` keeps them. Checked as prospeo.base_url is.
    #[arg(
        long,
        value_name = "URL",
        env = ENV_BASE_URL,
        hide_env_values = true,
        value_parser = super::base_url,
        global = true
    )]
    pub base_url: Option<String>,
}

/// Which cache a command works on.
enum Target {
    /// The local file.
    File(PathBuf),
    /// The coordinator's answers.
    Coordinator(CoordinatorUrl),
}

impl Target {
    /// A flag names the cache; else one of PROSPEO_CACHE and PROSPEO_COORDINATOR (both is
    /// ambiguous); else the default file. A URL holding a password is refused here, before
    /// anything connects.
    fn resolve(
        cache: Option<PathBuf>,
        coordinator: Option<Hidden>,
        base_url: Option<String>,
    ) -> Result<Self, CliError> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let url = |text: &str| {
            CoordinatorUrl::parse(text)
                .map(Target::Coordinator)
                .map_err(api_error)
        };
        match (cache, coordinator) {
            (Some(_), Some(_)) => Err(CliError::BadInput(
                "--cache and --coordinator name two caches: give one".into(),
            )),
            (Some(path), None) => Ok(Target::File(path)),
            (None, Some(Hidden(text))) => url(&text),
            (None, None) => match (env(ENV_CACHE), env(ENV_COORDINATOR)) {
                (Some(_), Some(_)) => Err(CliError::BadInput(format!(
                    "both {ENV_CACHE} and {ENV_COORDINATOR} are set: say which cache with --cache PATH or --coordinator URL"
                ))),
                (Some(path), None) => Ok(Target::File(PathBuf::from(path))),
                (None, Some(text)) => url(&text.to_string_lossy()),
                // The file `enrich` and `sql` use: the vendor's, or the one of the API at
                // --base-url (PROSPEO_BASE_URL) when that is another (a sandbox's answers are
                // kept apart). The URL is checked by clap as `enrich` checks it: a mistyped one
                // must not name an empty file.
                (None, None) => {
                    let options = EnrichOptions {
                        base_url,
                        ..EnrichOptions::default()
                    };
                    match options.cache_file() {
                        Ok(Some(path)) => Ok(Target::File(path)),
                        Ok(None) | Err(_) => Err(CliError::BadInput(
                            "this platform has no cache directory: give the cache file with --cache PATH"
                                .into(),
                        )),
                    }
                }
            },
        }
    }
}

/// What to do with the cache.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Count the stored answers by status, the revealed mobiles, the oldest and newest answer,
    /// and the file's size (with --coordinator, the stored answers' bytes).
    Stats {
        /// Print the counts as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Delete the cache file: every stored answer (and the personal data in it) is gone, and
    /// the next run pays again for what it sends.
    ///
    /// A missing file is not an error. A file that is not a response cache is not deleted, nor
    /// is a cache another prospeo process has open. With --coordinator, every answer the
    /// workers share is deleted (the tables stay), and how many is said.
    Clear,
    /// Write every stored answer to a Parquet file (zstd), one row per answer.
    ///
    /// Columns: the nine datapoints of the request (first_name ... person_id),
    /// only_verified_email and only_verified_mobile (the flags the answer was asked with),
    /// mobile_requested (whether the mobile was to be revealed), stored_at (when the answer
    /// arrived, UTC), cost (the credits it cost then), status (matched, not_matched,
    /// invalid_datapoints), then the person and company columns exactly as `prospeo enrich`
    /// writes them (prospeo_person_*, prospeo_company_*) and prospeo_free_enrichment. The
    /// output is committed only when complete, like `prospeo enrich`'s.
    Export {
        /// The file to write, local or s3://, gs://, az://; replaced if it exists. Parquet
        /// (zstd) unless the extension or --output-format says .csv, .ndjson or .arrow.
        #[arg(value_name = "OUTPUT")]
        output: String,
        /// Output format, when the extension does not say it.
        #[arg(long, value_enum)]
        output_format: Option<OutputFormat>,
    },
}

pub async fn run(args: CacheArgs) -> Result<u8, CliError> {
    let base_url = args.base_url.filter(|url| !url.is_empty());
    let path = match Target::resolve(args.cache, args.coordinator, base_url.clone())? {
        Target::File(path) => path,
        Target::Coordinator(url) => return run_coordinator(&url, args.command, base_url).await,
    };
    if let CacheCommand::Export {
        output,
        output_format,
    } = &args.command
    {
        return export(&path, output, *output_format).await;
    }
    // The cache does blocking file I/O.
    tokio::task::spawn_blocking(move || match args.command {
        CacheCommand::Stats { json } => stats(&path, json),
        CacheCommand::Clear => clear(&path),
        CacheCommand::Export { .. } => unreachable!("handled above"),
    })
    .await
    .map_err(|e| CliError::Failure(format!("the cache command stopped: {e}")))?
}

/// A library error as this command reports it: a cache another process holds is the user's to
/// wait for (as for `enrich`); anything else a failure.
fn failure(e: datafusion_prospeo::Error) -> CliError {
    if e.is_cache_in_use() {
        return CliError::from(e);
    }
    CliError::Failure(e.to_string())
}

fn stats(path: &Path, json: bool) -> Result<u8, CliError> {
    // Looking must not create a cache.
    let stats = if path.exists() {
        Some(
            ResponseCache::open(path)
                .map_err(failure)?
                .stats()
                .map_err(failure)?,
        )
    } else {
        None
    };
    if json {
        let mut value = serde_json::to_value(stats.clone().unwrap_or_default())
            .map_err(|e| CliError::Failure(e.to_string()))?;
        value["path"] = path.display().to_string().into();
        value["exists"] = stats.is_some().into();
        println!("{value}");
        return Ok(0);
    }
    let Some(stats) = stats else {
        println!("No response cache at {}", path.display());
        return Ok(0);
    };
    print_stats(&path.display(), &stats);
    Ok(0)
}

/// `prospeo cache` on the coordinator's answers: connected and its schema checked first (a
/// missing or newer schema is an error that says what to do, exit 2).
async fn run_coordinator(
    url: &CoordinatorUrl,
    command: CacheCommand,
    base_url: Option<String>,
) -> Result<u8, CliError> {
    let mut coordinator = Coordinator::connect(url).await.map_err(api_error)?;
    coordinator.check_version().await.map_err(api_error)?;
    // The answers of the API --base-url (PROSPEO_BASE_URL) names, else the vendor's: the ones
    // `enrich` with the same URL shares.
    let api = match base_url {
        Some(url) => url,
        None => datafusion_prospeo::ClientBuilder::from_env()
            .configured_base_url()
            .to_string(),
    };
    coordinator.set_api(&api);
    match command {
        CacheCommand::Stats { json } => {
            let stats = coordinator.answer_stats().await.map_err(api_error)?;
            if json {
                let mut value =
                    serde_json::to_value(&stats).map_err(|e| CliError::Failure(e.to_string()))?;
                value["coordinator"] = url.to_string().into();
                value["exists"] = true.into();
                println!("{value}");
            } else {
                print_stats(url, &stats);
            }
        }
        CacheCommand::Clear => {
            let removed = coordinator.clear_answers().await.map_err(api_error)?;
            if removed > 0 {
                println!("Removed {removed} answers from the coordinator {url}");
            } else {
                println!("No answers in the coordinator {url}: nothing to remove");
            }
        }
        CacheCommand::Export {
            output,
            output_format,
        } => {
            let target = export_target(&output, output_format)?;
            let export = Export::new();
            let schema = export.schema.clone();
            // The writer pulls a page when it wants the next batch: one page in memory at a
            // time, and a failed read ends the stream with an error (nothing is committed).
            let (export, coordinator) = (&export, &coordinator);
            let pages = futures::stream::try_unfold(Some(None), move |state| async move {
                let Some(mut after): Option<Option<CacheKey>> = state else {
                    return Ok(None);
                };
                loop {
                    let page = coordinator
                        .answers_after(after.as_ref(), EXPORT_PAGE)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    if page.entries.is_empty() {
                        match page.next {
                            // A full page of answers that do not decode: read on.
                            Some(next) => {
                                after = Some(next);
                                continue;
                            }
                            None => return Ok(None),
                        }
                    }
                    let batch = export.batch(&page.entries)?;
                    return Ok(Some((batch, page.next.map(Some))));
                }
            });
            write_export(target, &output, schema, pages).await?;
        }
    }
    Ok(0)
}

fn print_stats(name: &dyn std::fmt::Display, s: &CacheStats) {
    let time = |t: Option<SystemTime>| t.map_or("-".to_string(), datafusion_prospeo::time::rfc3339);
    println!("cache                 {name}");
    if let Some(bytes) = s.file_bytes {
        println!("size                  {}", human_bytes(bytes));
    }
    println!("entries               {:>10}", s.entries);
    println!("  matched             {:>10}", s.matched);
    println!("  not_matched         {:>10}", s.not_matched);
    println!("  invalid_datapoints  {:>10}", s.invalid_datapoints);
    if s.unreadable > 0 {
        println!(
            "  unreadable          {:>10}  (written by another version: sent again when met)",
            s.unreadable
        );
    }
    println!("revealed mobiles      {:>10}", s.with_revealed_mobile);
    println!("oldest                {}", time(s.oldest));
    println!("newest                {}", time(s.newest));
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = "bytes";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit} ({bytes} bytes)")
}

fn clear(path: &Path) -> Result<u8, CliError> {
    let bytes = fs::metadata(path).map(|m| m.len()).ok();
    if remove_file(path).map_err(failure)? {
        let size = bytes.map_or(String::new(), |b| format!(", {}", human_bytes(b)));
        println!("Removed the response cache {}{size}", path.display());
    } else {
        println!("No response cache at {}: nothing to remove", path.display());
    }
    Ok(0)
}

/// Writes every entry, a page at a time, through the same committed-when-complete writer as
/// `prospeo enrich`.
async fn export(path: &Path, output: &str, format: Option<OutputFormat>) -> Result<u8, CliError> {
    if !path.exists() {
        return Err(CliError::BadInput(format!(
            "no response cache at {}: nothing to export (give the file with --cache PATH)",
            path.display()
        )));
    }
    let local = Path::new(output);
    if local.exists() && fs::canonicalize(local).ok() == fs::canonicalize(path).ok() {
        return Err(CliError::BadInput(format!(
            "{output} is the cache itself: export to another file"
        )));
    }
    let target = export_target(output, format)?;
    let cache = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || ResponseCache::open(&path))
            .await
            .map_err(|e| CliError::Failure(format!("the cache command stopped: {e}")))?
            .map_err(failure)?
    };
    let export = Export::new();
    let schema = export.schema.clone();
    // Pages are read on a blocking thread and handed over two at a time; an error is sent down
    // the stream, so the writer never commits a partial export.
    let (pages, received) = tokio::sync::mpsc::channel::<Result<RecordBatch, DataFusionError>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let walked = cache.for_each_page(EXPORT_PAGE, |page| {
            let batch = export.batch(page).map_err(|e| Error::Cache {
                path: "export".into(),
                reason: format!("cannot build the export: {e}"),
            })?;
            pages.blocking_send(Ok(batch)).map_err(|_| Error::Cache {
                path: "export".into(),
                reason: "the writer stopped".into(),
            })
        });
        if let Err(e) = walked {
            let _ = pages.blocking_send(Err(DataFusionError::External(Box::new(e))));
        }
    });
    let stream = futures::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|batch| (batch, received))
    });
    let written = write_export(target, output, schema, stream).await;
    let _ = reader.await;
    written
}

/// Where the export goes: `output`, Parquet unless its extension or `format` says otherwise.
fn export_target(output: &str, format: Option<OutputFormat>) -> Result<Output, CliError> {
    let format = format
        .or(Some(OutputFormat::Parquet).filter(|_| OutputFormat::from_target(output).is_none()));
    Output::resolve(output, format, &Arc::new(RuntimeEnv::default()))
}

/// Writes the export's batches to `target` (named `output`), committed only when complete,
/// like `prospeo enrich`'s output.
async fn write_export(
    target: Output,
    output: &str,
    schema: SchemaRef,
    batches: impl futures::Stream<Item = Result<RecordBatch, DataFusionError>>,
) -> Result<u8, CliError> {
    let open = target.open().await?;
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let rows = open.write(schema, batches, interrupted).await?;
    eprintln!("Wrote {rows} cached answers to {output}");
    Ok(0)
}

/// The export's schema and the step from cache entries to batches of it.
struct Export {
    flattened: OutputSchema,
    /// Indices of the flattened columns that are kept.
    kept: Vec<usize>,
    schema: SchemaRef,
}

impl Export {
    fn new() -> Self {
        // The enrich output's prefix: the same names as there, and none clashes with a
        // datapoint (company_name is a datapoint and a company field).
        let flattened = OutputSchema::new(DEFAULT_PREFIX);
        let flat_schema = flattened.schema();
        let kept: Vec<usize> = flat_schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                let name = f.name().strip_prefix(DEFAULT_PREFIX).unwrap_or(f.name());
                !REPLACED_COLUMNS.contains(&name)
            })
            .map(|(i, _)| i)
            .collect();
        // Which endpoint answered, then its datapoints (a datapoint it does not take is null).
        let mut fields = vec![Field::new("endpoint", DataType::Utf8, false)];
        fields.extend(
            Datapoint::ALL
                .iter()
                .map(|d| Field::new(d.as_str(), DataType::Utf8, true)),
        );
        fields.extend([
            Field::new("only_verified_email", DataType::Boolean, false),
            Field::new("only_verified_mobile", DataType::Boolean, false),
            Field::new("mobile_requested", DataType::Boolean, false),
            Field::new(
                "stored_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("cost", DataType::Int64, false),
            Field::new("status", DataType::Utf8, false),
        ]);
        fields.extend(kept.iter().map(|&i| flat_schema.field(i).clone()));
        Export {
            flattened,
            kept,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    fn batch(
        &self,
        page: &[(CacheKey, CacheEntry)],
    ) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
        let mut datapoints: Vec<StringBuilder> = Datapoint::ALL
            .iter()
            .map(|_| StringBuilder::new())
            .collect();
        let mut endpoint = StringBuilder::new();
        let mut only_verified_email = BooleanBuilder::with_capacity(page.len());
        let mut only_verified_mobile = BooleanBuilder::with_capacity(page.len());
        let mut mobile_requested = BooleanBuilder::with_capacity(page.len());
        let mut stored_at =
            TimestampMillisecondBuilder::with_capacity(page.len()).with_timezone("UTC");
        let mut cost = Int64Builder::with_capacity(page.len());
        let mut status = StringBuilder::new();
        let mut outcomes: Vec<RecordOutcome> = Vec::with_capacity(page.len());
        for (key, entry) in page {
            let (Some(points), Some(flags), Some(asked)) =
                (key.datapoints(), key.flags(), key.endpoint())
            else {
                tracing::warn!("skipping a cache key written by another version");
                continue;
            };
            endpoint.append_value(asked.path());
            for (builder, datapoint) in datapoints.iter_mut().zip(Datapoint::ALL) {
                builder.append_option(points.get(datapoint));
            }
            only_verified_email.append_value(flags.only_verified_email);
            only_verified_mobile.append_value(flags.only_verified_mobile);
            mobile_requested.append_value(entry.mobile_requested);
            stored_at.append_value(
                chrono::DateTime::<chrono::Utc>::from(entry.stored_at).timestamp_millis(),
            );
            cost.append_value(entry.cost);
            status.append_value(entry.answer.status_str());
            outcomes.push(entry.to_outcome());
        }
        let flat = self.flattened.flatten(&outcomes)?;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(endpoint.finish())];
        columns.extend(
            datapoints
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend([
            Arc::new(only_verified_email.finish()) as ArrayRef,
            Arc::new(only_verified_mobile.finish()),
            Arc::new(mobile_requested.finish()),
            Arc::new(stored_at.finish()),
            Arc::new(cost.finish()),
            Arc::new(status.finish()),
        ]);
        columns.extend(self.kept.iter().map(|&i| flat.column(i).clone()));
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion_prospeo::Datapoints;
    use datafusion_prospeo::api::wire::{EnrichFlags, Person};
    use datafusion_prospeo::cache::CachedAnswer;

    #[test]
    fn a_cache_another_process_holds_is_reported_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        let held = ResponseCache::open(&path).unwrap();
        for result in [stats(&path, false), clear(&path)] {
            let err = result.unwrap_err();
            assert!(matches!(err, CliError::CacheInUse(_)), "{err:?}");
        }
        assert!(path.exists(), "a cache in use is not deleted");
        drop(held);
        assert_eq!(clear(&path).unwrap(), 0);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn export_writes_one_row_per_answer_with_the_key_and_the_objects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        let cache = ResponseCache::open(&path).unwrap();
        let person: Person = serde_json::from_value(serde_json::json!({
            "first_name": "Eva", "email": {"email": "eva@intercom.com", "revealed": true}
        }))
        .unwrap();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let flags = EnrichFlags {
            only_verified_email: true,
            ..EnrichFlags::default()
        };
        let entries: Vec<(CacheKey, CacheEntry)> = (0..EXPORT_PAGE + 5)
            .map(|i| {
                let datapoints = Datapoints {
                    email: Some(format!("p{i:05}@intercom.com")),
                    first_name: Some("Eva".to_string()),
                    ..Datapoints::default()
                };
                let answer = if i == 0 {
                    CachedAnswer::Matched {
                        person: Some(person.clone()),
                        company: None,
                        free_enrichment: true,
                    }
                } else {
                    CachedAnswer::NotMatched
                };
                let entry = CacheEntry {
                    answer,
                    stored_at: at,
                    mobile_requested: false,
                    cost: if i == 0 { 1 } else { 0 },
                };
                (CacheKey::new(&datapoints, flags), entry)
            })
            .collect();
        cache.put_many(&entries).unwrap();
        drop(cache);

        let output = dir.path().join("out").join("export.parquet");
        fs::create_dir(output.parent().unwrap()).unwrap();
        assert_eq!(
            export(&path, output.to_str().unwrap(), None).await.unwrap(),
            0
        );
        let leftovers: Vec<_> = fs::read_dir(output.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("export.parquet")]);

        let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&output).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, EXPORT_PAGE + 5);
        let first = &batches[0];
        let schema = first.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names[0], "endpoint");
        assert_eq!(&names[1..11], Datapoint::ALL.map(|d| d.as_str()).as_slice());
        assert_eq!(
            &names[11..17],
            [
                "only_verified_email",
                "only_verified_mobile",
                "mobile_requested",
                "stored_at",
                "cost",
                "status"
            ]
        );
        for name in [
            "prospeo_person_first_name",
            "prospeo_person_email_email",
            "prospeo_company_name",
            "prospeo_free_enrichment",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate columns: {names:?}");
        let text = |name: &str| {
            first
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .value(0)
                .to_string()
        };
        assert_eq!(text("endpoint"), "/bulk-enrich-person");
        assert_eq!(text("email"), "p00000@intercom.com");
        assert_eq!(text("first_name"), "Eva");
        assert_eq!(text("status"), "matched");
        assert_eq!(text("prospeo_person_first_name"), "Eva");
        assert_eq!(text("prospeo_person_email_email"), "eva@intercom.com");
        assert!(first.column_by_name("last_name").unwrap().is_null(0));
        let flag =
            |name: &str, row: usize| first.column_by_name(name).unwrap().as_boolean().value(row);
        assert!(flag("only_verified_email", 0));
        assert!(!flag("only_verified_mobile", 0));
        assert!(flag("prospeo_free_enrichment", 0));
        assert_eq!(
            names.len(),
            17 + OutputSchema::default().schema().fields().len() - 3
        );
        let cost = first
            .column_by_name("cost")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!((cost.value(0), cost.value(1)), (1, 0));
        let stored = first
            .column_by_name("stored_at")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(stored.value(0), 1_700_000_000_123);
        assert_eq!(text("status"), "matched");
        assert_eq!(
            first
                .column_by_name("status")
                .unwrap()
                .as_string::<i32>()
                .value(1),
            "not_matched"
        );
    }

    #[tokio::test]
    async fn export_of_a_missing_cache_is_bad_input_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("export.parquet");
        let err = export(
            &dir.path().join("missing.redb"),
            output.to_str().unwrap(),
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CliError::BadInput(_)), "{err:?}");
        assert!(!output.exists());
    }

    #[test]
    fn clear_removes_the_file_and_a_missing_file_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        assert_eq!(clear(&path).unwrap(), 0);
        drop(ResponseCache::open(&path).unwrap());
        assert!(path.exists());
        assert_eq!(clear(&path).unwrap(), 0);
        assert!(!path.exists());
        // Stats of a missing cache do not create it.
        assert_eq!(stats(&path, true).unwrap(), 0);
        assert!(!path.exists());
    }

    #[test]
    fn sizes_read_as_humans_write_them() {
        assert_eq!(human_bytes(12), "12 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB (3145728 bytes)");
    }
}
