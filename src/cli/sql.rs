//! `prospeo sql`: a DataFusion session with `enrich_person` and `enrich_company` registered, for one query, a script,
//! or an interactive shell.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::DFParser;
use datafusion_prospeo::datafusion::options::OptionKey;
use datafusion_prospeo::sandbox::Sandbox;
use futures::StreamExt;

use super::CliError;
use super::output::{Output, OutputFormat, nested_as_text, planning_error, query_error};

/// Options of `prospeo sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL to run: one statement or several separated by `;`. Without it (and without
    /// --file) statements are read from standard input, with a prompt on a terminal.
    pub query: Option<String>,
    /// Run the statements of this file.
    #[arg(long, short = 'f', value_name = "PATH", conflicts_with = "query")]
    pub file: Option<PathBuf>,
    /// Write the last statement's result to this file or object-store URL (format from the
    /// extension or --format), committed only when complete, instead of printing it.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<String>,
    /// How results are printed (table, csv, json), or the output file's format with -o
    /// (parquet, csv, json, arrow).
    #[arg(long, value_enum)]
    pub format: Option<SqlFormat>,
    /// Use an embedded sandbox with the sample directory and a demo key for enrich_person and
    /// enrich_company: nothing is paid, no key is needed.
    #[arg(long)]
    pub sandbox: bool,
    #[command(flatten)]
    pub api: super::ApiArgs,
    /// The session's `prospeo.*` options, as `SET prospeo.<option>` would set them (the same
    /// names with `-` for `_`, the same checks); SET still changes them.
    #[command(flatten)]
    pub options: super::options::OptionArgs,
}

/// Result formats of `prospeo sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqlFormat {
    /// An aligned text table (the default on standard output).
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object a line.
    #[value(alias = "ndjson")]
    Json,
    /// Parquet (with -o only).
    Parquet,
    /// Arrow IPC file (with -o only).
    Arrow,
}

/// Runs `prospeo sql`; returns the exit code.
pub async fn run(args: SqlArgs) -> Result<u8, CliError> {
    let ctx = SessionContext::new().enable_url_table();
    let sandbox = if args.sandbox {
        Some(super::embedded_sandbox().await?)
    } else {
        None
    };
    register(&ctx, &args, sandbox.as_ref())?;
    let result = match (&args.query, &args.file) {
        (Some(query), _) => run_script(&ctx, query, &args).await,
        (None, Some(path)) => {
            let script = std::fs::read_to_string(path)
                .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))?;
            run_script(&ctx, &script, &args).await
        }
        (None, None) if std::io::stdin().is_terminal() => shell(&ctx, &args).await,
        (None, None) => {
            let mut script = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut script)
                .map_err(|e| CliError::BadInput(format!("cannot read standard input: {e}")))?;
            run_script(&ctx, &script, &args).await
        }
    };
    if let Some(sandbox) = sandbox {
        let _ = sandbox.stop().await;
    }
    result.map(|()| 0)
}

/// Registers `enrich_person` and `enrich_company` with clients made from the key file or the
/// environment (or the embedded sandbox) plus the session's `prospeo.*` options.
fn register(
    ctx: &SessionContext,
    args: &SqlArgs,
    sandbox: Option<&Sandbox>,
) -> Result<(), CliError> {
    let builder = args.api.builder(sandbox)?;
    datafusion_prospeo::register_with_builder(ctx, builder);
    let state = ctx.state_ref();
    let mut state = state.write();
    let options = state
        .config_mut()
        .options_mut()
        .extensions
        .get_mut::<datafusion_prospeo::EnrichOptions>()
        .ok_or_else(|| CliError::Failure("prospeo options are not registered".into()))?;
    args.options.apply(options).map_err(super::api_error)?;
    // Sandbox answers are kept in memory, never in the cache of paid ones, unless a cache file
    // is named.
    if sandbox.is_some() && options.cache_path.is_none() {
        options
            .set_key(OptionKey::Cache, "false")
            .map_err(super::api_error)?;
    }
    Ok(())
}

/// Runs every statement of `script`; the last one's result goes to -o when given.
async fn run_script(ctx: &SessionContext, script: &str, args: &SqlArgs) -> Result<(), CliError> {
    let statements = split_statements(script)?;
    if statements.is_empty() {
        return Err(CliError::BadInput("no SQL statement to run".into()));
    }
    let last = statements.len() - 1;
    for (i, statement) in statements.iter().enumerate() {
        let df = ctx.sql(statement).await.map_err(planning_error)?;
        match (&args.output, i == last) {
            (Some(target), true) => write_output(ctx, df, target, args.format).await?,
            _ => print(df, args.format.unwrap_or(SqlFormat::Table)).await?,
        }
    }
    Ok(())
}

/// The statements of a script, each as its own SQL text (DataFusion plans one at a time).
fn split_statements(script: &str) -> Result<Vec<String>, CliError> {
    let statements = DFParser::parse_sql(script)
        .map_err(|e| CliError::BadInput(format!("cannot parse the SQL: {e}")))?;
    Ok(statements.iter().map(|s| s.to_string()).collect())
}

async fn write_output(
    ctx: &SessionContext,
    df: DataFrame,
    target: &str,
    format: Option<SqlFormat>,
) -> Result<(), CliError> {
    let format = match format {
        None => None,
        Some(SqlFormat::Parquet) => Some(OutputFormat::Parquet),
        Some(SqlFormat::Csv) => Some(OutputFormat::Csv),
        Some(SqlFormat::Json) => Some(OutputFormat::Ndjson),
        Some(SqlFormat::Arrow) => Some(OutputFormat::Arrow),
        Some(SqlFormat::Table) => {
            return Err(CliError::BadInput(
                "--format table prints to the terminal; with -o use parquet, csv, json or arrow"
                    .into(),
            ));
        }
    };
    let output = Output::resolve(target, format, &ctx.runtime_env())?;
    let open = output.open().await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let stream = df.execute_stream().await.map_err(query_error)?;
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let rows = open.write(schema, stream, interrupted).await?;
    eprintln!("Wrote {rows} rows to {target}");
    Ok(())
}

/// Prints a result on standard output.
async fn print(df: DataFrame, format: SqlFormat) -> Result<(), CliError> {
    // SET, CREATE VIEW and the like have no result to show.
    let has_columns = !df.schema().fields().is_empty();
    let mut stream = df.execute_stream().await.map_err(query_error)?;
    let stdout = std::io::stdout();
    let failure = |e: &dyn std::fmt::Display| CliError::Failure(e.to_string());
    match format {
        SqlFormat::Table => {
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch.map_err(query_error)?);
            }
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if !batches.is_empty() && batches[0].num_columns() > 0 {
                let table = pretty_format_batches(&batches).map_err(|e| failure(&e))?;
                writeln!(stdout.lock(), "{table}").map_err(|e| failure(&e))?;
            }
            if has_columns {
                eprintln!("{rows} row{}", if rows == 1 { "" } else { "s" });
            }
        }
        SqlFormat::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(stdout.lock());
            while let Some(batch) = stream.next().await {
                let batch =
                    nested_as_text(&batch.map_err(query_error)?).map_err(|e| failure(&e))?;
                writer.write(&batch).map_err(|e| failure(&e))?;
            }
        }
        SqlFormat::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(stdout.lock());
            while let Some(batch) = stream.next().await {
                writer
                    .write(&batch.map_err(query_error)?)
                    .map_err(|e| failure(&e))?;
            }
            writer.finish().map_err(|e| failure(&e))?;
        }
        SqlFormat::Parquet | SqlFormat::Arrow => {
            return Err(CliError::BadInput(
                "parquet and arrow results are binary: give a file with -o".into(),
            ));
        }
    }
    Ok(())
}

/// The interactive shell: statements end with `;`; `\q`, `quit`, `exit` or end of input leave;
/// Ctrl-C cancels the running statement (or the one being typed).
async fn shell(ctx: &SessionContext, args: &SqlArgs) -> Result<(), CliError> {
    eprintln!(
        "prospeo sql: end statements with ;  enrich_person('leads.csv') or enrich_company('accounts.csv') enriches a file;  \\q quits"
    );
    let (lines, mut next_line) = tokio::sync::mpsc::channel::<String>(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut buffer = String::new();
    loop {
        eprint!(
            "{}",
            if buffer.is_empty() {
                "prospeo> "
            } else {
                "     ...> "
            }
        );
        let _ = std::io::stderr().flush();
        let line = tokio::select! {
            line = next_line.recv() => line,
            _ = tokio::signal::ctrl_c() => {
                eprintln!();
                buffer.clear();
                continue;
            }
        };
        let Some(line) = line else {
            eprintln!();
            return Ok(());
        };
        let trimmed = line.trim();
        if buffer.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit" | "quit;" | "exit;") {
            return Ok(());
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let script = std::mem::take(&mut buffer);
        let outcome = tokio::select! {
            outcome = run_script(ctx, &script, args) => outcome,
            _ = tokio::signal::ctrl_c() => Err(CliError::Interrupted),
        };
        match outcome {
            Ok(()) => {}
            Err(CliError::Interrupted) => eprintln!("cancelled"),
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_into_statements() {
        let statements = split_statements(
            "SET prospeo.enrich_mobile = true; SELECT 'a;b' AS x;\n-- done\nSELECT 1",
        )
        .unwrap();
        assert_eq!(statements.len(), 3);
        assert!(statements[1].contains("'a;b'"));
        assert!(split_statements("SELEC nothing").is_err());
    }
}
