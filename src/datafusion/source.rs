//! Object stores for `s3://`, `gs://`, `az://` and `http(s)://` inputs and outputs, configured
//! from the standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and registered on
//! first use for the bucket in the URL.

use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::object_store::ObjectStore;
use datafusion::object_store::aws::AmazonS3Builder;
use datafusion::object_store::azure::MicrosoftAzureBuilder;
use datafusion::object_store::gcp::GoogleCloudStorageBuilder;
use datafusion::object_store::http::HttpBuilder;
use url::Url;

/// Registers an object store for `url`'s bucket unless the session already has one.
pub fn ensure_object_store(state: &SessionState, url: &ListingTableUrl) -> Result<()> {
    ensure_for_url(state.runtime_env(), url.as_ref())
}

/// Same, for any URL (outputs too).
pub fn ensure_for_url(runtime: &Arc<RuntimeEnv>, url: &Url) -> Result<()> {
    let Ok(store_url) = datafusion::execution::object_store::ObjectStoreUrl::parse(
        &url[..url::Position::BeforePath],
    ) else {
        return Ok(());
    };
    if runtime.object_store(&store_url).is_ok() {
        return Ok(());
    }
    let bucket = url.host_str().unwrap_or_default();
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => Arc::new(
            AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| store_error(url, e))?,
        ),
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| store_error(url, e))?,
        ),
        "az" | "abfs" | "abfss" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .build()
                .map_err(|e| store_error(url, e))?,
        ),
        "http" | "https" => {
            let base = format!("{}://{}", url.scheme(), url.authority());
            Arc::new(
                HttpBuilder::new()
                    .with_url(base)
                    .build()
                    .map_err(|e| store_error(url, e))?,
            )
        }
        // Local files, and schemes the session already knows or nobody does: DataFusion's
        // own error is the clearest.
        _ => return Ok(()),
    };
    let mut root = url.clone();
    root.set_path("");
    root.set_query(None);
    root.set_fragment(None);
    runtime.register_object_store(&root, store);
    Ok(())
}

fn store_error(url: &Url, e: datafusion::object_store::Error) -> DataFusionError {
    DataFusionError::Plan(format!(
        "cannot open {}://{}: {e}. Object stores are configured from the environment (AWS_REGION, AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP for S3)",
        url.scheme(),
        url.host_str().unwrap_or_default()
    ))
}
