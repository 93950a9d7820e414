//! Weights published as safetensors on the Hugging Face Hub (for example timm's
//! `timm/vgg16.tv_in1k`), downloaded through hf-hub into `<deepsim home>/hub`.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// A file on the Hub: repository and path inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubFile {
    /// Repository, `owner/name`.
    pub repo: String,
    /// File inside the repository.
    pub file: String,
}

impl HubFile {
    /// Parses `owner/name[:file]`; the file defaults to `model.safetensors`.
    ///
    /// # Errors
    /// A repository without exactly one `/`.
    pub fn parse(spec: &str) -> Result<Self> {
        let (repo, file) = spec.split_once(':').unwrap_or((spec, "model.safetensors"));
        if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) || file.is_empty() {
            return Err(Error::Hub {
                spec: spec.into(),
                reason: "expected owner/name or owner/name:file".into(),
            });
        }
        Ok(Self { repo: repo.into(), file: file.into() })
    }

    /// The file's download address.
    pub fn url(&self) -> String {
        format!("https://huggingface.co/{}/resolve/main/{}", self.repo, self.file)
    }

    /// Where a manual download must be put so that [`HubFile::fetch`] finds it offline.
    pub fn manual_path(&self) -> PathBuf {
        super::deepsim_home().join("hub").join(self.repo.replace('/', "--")).join(&self.file)
    }

    /// The local copy: a manual download at [`HubFile::manual_path`] if present, else a
    /// download through hf-hub (into `<deepsim home>/hub`), unless `HF_HUB_OFFLINE=1`.
    ///
    /// # Errors
    /// [`Error::Hub`] when offline or the download fails, saying which file to fetch and
    /// where to put it.
    pub fn fetch(&self) -> Result<PathBuf> {
        let manual = self.manual_path();
        if manual.is_file() {
            return Ok(manual);
        }
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true");
        let fail = |why: String| Error::Hub {
            spec: format!("{}:{}", self.repo, self.file),
            reason: format!("{why}; download {} and put it at {}", self.url(), manual.display()),
        };
        if offline {
            return Err(fail("HF_HUB_OFFLINE is set".into()));
        }
        let api = hf_hub::api::sync::ApiBuilder::new()
            .with_cache_dir(super::deepsim_home().join("hub-cache"))
            .with_progress(true)
            .build()
            .map_err(|e| fail(format!("cannot start the Hub client: {e}")))?;
        api.model(self.repo.clone())
            .get(&self.file)
            .map_err(|e| fail(format!("download failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let f = HubFile::parse("timm/vgg16.tv_in1k").unwrap();
        assert_eq!(f.file, "model.safetensors");
        assert_eq!(
            f.url(),
            "https://huggingface.co/timm/vgg16.tv_in1k/resolve/main/model.safetensors"
        );
        let f = HubFile::parse("a/b:sub/w.safetensors").unwrap();
        assert_eq!((f.repo.as_str(), f.file.as_str()), ("a/b", "sub/w.safetensors"));
        for bad in ["vgg16", "a/b/c", "/b", "a/b:"] {
            assert!(HubFile::parse(bad).is_err(), "{bad}");
        }
    }
}
