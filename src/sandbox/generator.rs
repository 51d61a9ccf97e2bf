//! Deterministic generator of the sandbox directory and of sample lead files.
//! (Placeholder while the generator is written; replaced before the first commit that uses it.)

use crate::sandbox::directory::Directory;

/// How big a directory to generate, and from which seed.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub companies: usize,
    pub people: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            companies: 40,
            people: 240,
        }
    }
}

/// Generates a directory.
pub fn generate_directory(_config: &GeneratorConfig) -> Directory {
    Directory::default()
}

/// What sample data to write.
#[derive(Debug, Clone, Default)]
pub struct SampleData {
    pub directory: GeneratorConfig,
    pub lead_rows: usize,
}

/// Why sample data could not be written.
#[derive(Debug, thiserror::Error)]
#[error("not yet")]
pub struct GeneratorError;

/// Writes sample data.
pub fn write_sample_data(
    _out: &std::path::Path,
    _sample: &SampleData,
) -> Result<Directory, GeneratorError> {
    Err(GeneratorError)
}
