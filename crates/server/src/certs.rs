//! Certificates: the operator's from the `certificates` directory
//! (`HOST.crt` + `HOST.key`, PEM), or a self-signed one made on first start
//! and reused after, so the embedded default works with no setup.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn paths(dir: &Path, host: &str) -> CertPaths {
    CertPaths {
        cert: dir.join(format!("{host}.crt")),
        key: dir.join(format!("{host}.key")),
    }
}

/// Returns the certificate for `host`, generating a self-signed one
/// (covering every name in `names`) if none exists.
pub fn ensure(dir: &Path, host: &str, names: &[String]) -> Result<CertPaths> {
    let p = paths(dir, host);
    if p.cert.exists() && p.key.exists() {
        return Ok(p);
    }
    generate(dir, host, names)?;
    tracing::info!(cert = %p.cert.display(), "generated a self-signed certificate; replace it with a real one for production");
    Ok(p)
}

pub fn generate(dir: &Path, host: &str, names: &[String]) -> Result<CertPaths> {
    let p = paths(dir, host);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut sans: Vec<String> = vec![host.to_string()];
    sans.extend(names.iter().filter(|n| n.as_str() != host).cloned());
    let certified = rcgen::generate_simple_self_signed(sans).context("generating a certificate")?;
    std::fs::write(&p.cert, certified.cert.pem()).with_context(|| format!("writing {}", p.cert.display()))?;
    write_private(&p.key, certified.signing_key.serialize_pem().as_bytes())?;
    Ok(p)
}

/// Writes a key readable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
