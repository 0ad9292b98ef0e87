//! Certificates made with the `openssl` command (a tool we did not write), as PEM files
//! in a directory of the test: self-signed server certificates, CAs, and server
//! certificates a CA signed. All keys are P-256.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `openssl ARGS` in `dir`; panics with its error output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// `NAME.crt` and `NAME.key` in `dir`.
fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

/// A self-signed server certificate for `name` and localhost (not a CA: webpki refuses
/// a CA as the end entity).
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    let (subject, san) = (
        format!("/CN={name}"),
        format!("subjectAltName=DNS:{name},DNS:localhost"),
    );
    let mut args = vec!["req", "-x509"];
    args.extend(NEW_KEY);
    args.extend([
        "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject,
    ]);
    args.extend([
        "-addext",
        &san,
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]);
    openssl(dir, &args);
    paths(dir, name)
}

/// A CA named `name`.
pub fn ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    let subject = format!("/CN={name}");
    let mut args = vec!["req", "-x509"];
    args.extend(NEW_KEY);
    args.extend([
        "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject,
    ]);
    openssl(dir, &args);
    paths(dir, name)
}

/// A server certificate `name` for localhost and 127.0.0.1, signed by `ca`.
pub fn signed(dir: &Path, ca: &(PathBuf, PathBuf), name: &str) -> (PathBuf, PathBuf) {
    let (crt, key, csr, ext) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    let mut args = vec!["req"];
    args.extend(NEW_KEY);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    openssl(dir, &args);
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let (ca_crt, ca_key) = (ca.0.to_str().unwrap(), ca.1.to_str().unwrap());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca_crt,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    paths(dir, name)
}
