//! A throwaway certificate authority for TLS tests, made with the `openssl` command line tool
//! (what an operator would use too).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    ca_key: PathBuf,
}

/// A leaf certificate and its key, as PEM files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path();
        openssl(
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ca.key",
            ],
            p,
        );
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-sha256",
                "-days",
                "2",
                "-subj",
                "/CN=Corral Test CA",
                "-out",
                "ca.pem",
            ],
            p,
        );
        TestCa {
            ca_cert: p.join("ca.pem"),
            ca_key: p.join("ca.key"),
            dir,
        }
    }

    /// Issues a certificate for `names` (DNS SANs), written as `<file>.pem` / `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        let p = self.dir.path();
        let key = format!("{file}.key");
        let csr = format!("{file}.csr");
        let cert = format!("{file}.pem");
        let ext = format!("{file}.ext");
        let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            p.join(&ext),
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
        .expect("ext");
        openssl(
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &format!("{file}.tmp.key"),
            ],
            p,
        );
        openssl(
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &format!("{file}.tmp.key"),
                "-out",
                &key,
            ],
            p,
        );
        openssl(
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                &format!("/CN={}", names[0]),
                "-out",
                &csr,
            ],
            p,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                self.ca_cert.to_str().expect("path"),
                "-CAkey",
                self.ca_key.to_str().expect("path"),
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
            p,
        );
        Leaf {
            cert: p.join(cert),
            key: p.join(key),
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_cert).expect("ca pem")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// The DER of the first certificate in a PEM file, to compare with what a server presented.
pub fn der_of(pem_path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_file_iter(pem_path)
        .expect("read pem")
        .next()
        .expect("one certificate")
        .expect("valid pem")
        .to_vec()
}
