//! A real Docker registry for tests: Debian's `docker-registry` on a free 127.0.0.1
//! port with its storage in a temporary folder, and images pushed into it by `skopeo`
//! from a small OCI layout built here.
//!
//! `.ci/run` installs both programs. Elsewhere [`TestRegistry::available`] says why a
//! test skips; under CI (`CI` set) a missing program is a failure instead.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest as _, Sha256};

/// Where Debian installs the registry.
pub const REGISTRY_PROGRAM: &str = "/usr/bin/docker-registry";
/// Where Debian installs skopeo.
pub const SKOPEO_PROGRAM: &str = "/usr/bin/skopeo";

/// Why a registry could not be started or an image pushed.
#[derive(Debug, thiserror::Error)]
pub enum TestRegistryError {
    #[error("could not prepare the registry: {0}")]
    Io(#[from] std::io::Error),
    #[error("docker-registry did not start listening on 127.0.0.1:{0}")]
    NotListening(u16),
    #[error("skopeo copy failed: {0}")]
    Push(String),
}

/// A running `docker-registry serve`, killed when dropped.
#[derive(Debug)]
pub struct TestRegistry {
    port: u16,
    process: Child,
    _storage: tempfile::TempDir,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl TestRegistry {
    /// Whether `docker-registry` and `skopeo` are installed. When they are not, prints
    /// why the calling test skips, or panics under CI, which installs them.
    ///
    /// # Panics
    /// When `CI` is set and a program is missing.
    pub fn available() -> bool {
        let missing: Vec<_> = [REGISTRY_PROGRAM, SKOPEO_PROGRAM]
            .into_iter()
            .filter(|program| !Path::new(program).exists())
            .collect();
        if missing.is_empty() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs docker-registry and skopeo, yet {missing:?} is missing"
        );
        eprintln!("skipped: {missing:?} is not installed (apt-get install docker-registry skopeo)");
        false
    }

    /// Starts a registry on a free port and waits until it listens. Blocking.
    ///
    /// # Errors
    /// When the program cannot be started or does not listen within 20 s.
    pub fn start() -> Result<Self, TestRegistryError> {
        let storage = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )?;
        let process = Command::new(REGISTRY_PROGRAM)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // It logs every 404 as an error; a registry that fails to start shows as
            // the wait below running out.
            .stderr(Stdio::null())
            .spawn()?;
        let registry = Self {
            port,
            process,
            _storage: storage,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(TestRegistryError::NotListening(port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// Stops the registry (to see how clients fare when it is gone).
    pub fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, the host part of image references in this registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes a one-layer image, built as an OCI layout, to `repository:tag`. Blocking.
    /// (skopeo may rewrite the manifest on the way, so only the registry knows its
    /// digest.)
    ///
    /// # Errors
    /// When the layout cannot be written or skopeo fails.
    pub fn push(&self, repository: &str, tag: &str) -> Result<(), TestRegistryError> {
        let layout = tempfile::tempdir()?;
        write_oci_layout(layout.path(), tag)?;
        let output = Command::new(SKOPEO_PROGRAM)
            .args(["copy", "--insecure-policy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.path().display()))
            .arg(format!("docker://{}/{repository}:{tag}", self.host()))
            .output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestRegistryError::Push(
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ))
        }
    }
}

/// Stores `bytes` as a blob of the layout, returning its descriptor's digest and size.
fn write_blob(layout: &Path, bytes: &[u8]) -> std::io::Result<(String, usize)> {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let folder = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&folder)?;
    std::fs::write(folder.join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len()))
}

/// An OCI image layout holding one image tagged `tag`: an empty tar as its layer.
fn write_oci_layout(layout: &Path, tag: &str) -> std::io::Result<()> {
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    // Two zero blocks: the end-of-archive marker, an empty but valid tar.
    let (layer_digest, layer_size) = write_blob(layout, &[0_u8; 1024])?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = write_blob(layout, config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = write_blob(layout, manifest.to_string().as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_stored_under_their_sha256() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (digest, size) = write_blob(dir.path(), b"abc").expect("blob");
        assert_eq!(
            digest,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(size, 3);
        assert!(dir.path().join("blobs/sha256").join(&digest[7..]).exists());
    }
}
