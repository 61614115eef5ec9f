//! Starts and stops the private containerd the demo uses (and anyone who wants to try the shim
//! by hand), with the local images imported.
//!
//! ```text
//! e2e-env start --work DIR [--containerd system|1.6|1.7|2.1] [--shim-dir DIR]
//!               [--shim-config FILE]
//!     starts containerd in DIR, imports the images, prints shell assignments:
//!     E2E_CTR (ctr with address and namespace), E2E_ADDRESS, E2E_IMAGE, E2E_APP_IMAGE, E2E_LOG;
//!     with --shim-config, containerd's shims read FILE as their host config
//!     (CONTAINERD_SHIM_PROXMOX_LXC_CONFIG), e.g. the one `pve-test-server --lxc-node` writes
//! e2e-env stop --work DIR
//!     removes every container, stops containerd and its shims, unmounts, deletes DIR;
//!     exits 1 if something had to be cleaned up by force (it says what)
//! e2e-env image --out FILE
//!     only writes the OCI layout tarball
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use e2e::{image, paths, Containerd, ContainerdVersion, NAMESPACE};

struct Args {
    command: String,
    work: Option<PathBuf>,
    version: String,
    shim_dir: PathBuf,
    out: Option<PathBuf>,
    shim_config: Option<PathBuf>,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let command = it
        .next()
        .ok_or_else(|| anyhow!("usage: e2e-env start|stop|image ..."))?;
    let mut args = Args {
        command,
        work: None,
        version: "system".into(),
        shim_dir: paths::shim_dir(),
        out: None,
        shim_config: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--work" => args.work = Some(PathBuf::from(value()?)),
            "--containerd" => args.version = value()?,
            "--shim-dir" => args.shim_dir = PathBuf::from(value()?),
            "--out" => args.out = Some(PathBuf::from(value()?)),
            "--shim-config" => args.shim_config = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

fn version(name: &str) -> Result<ContainerdVersion> {
    ContainerdVersion::named(name).map_err(|e| anyhow!(e))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn run() -> Result<bool> {
    let args = parse()?;
    match args.command.as_str() {
        "start" => {
            let work = args.work.context("--work DIR is required")?;
            let v = version(&args.version)?;
            std::fs::create_dir_all(&work)?;
            // Remembered for `stop`, which may run from another shell.
            std::fs::write(work.join("e2e-env.version"), &v.name)?;
            std::fs::write(
                work.join("e2e-env.shim-dir"),
                args.shim_dir.to_string_lossy().as_bytes(),
            )?;
            let shim_config = match &args.shim_config {
                // Absolute: containerd and its shims run in other working directories.
                Some(file) => Some(
                    file.canonicalize()
                        .with_context(|| format!("--shim-config {}", file.display()))?,
                ),
                None => None,
            };
            let cd = Containerd::start_with_shim_config(
                v,
                &work,
                &args.shim_dir,
                shim_config.as_deref(),
            )?;
            cd.import_images()?;
            let ctr = format!(
                "{} --address {} --namespace {NAMESPACE}",
                cd.version.ctr().display(),
                cd.address.display()
            );
            println!("E2E_CTR={}", shell_quote(&ctr));
            println!("E2E_ADDRESS={}", shell_quote(&cd.address.to_string_lossy()));
            println!("E2E_IMAGE={}", shell_quote(image::BUSYBOX_IMAGE));
            println!("E2E_APP_IMAGE={}", shell_quote(image::APP_IMAGE));
            println!("E2E_LOG={}", shell_quote(&cd.log_path().to_string_lossy()));
            Ok(true)
        }
        "stop" => {
            let work = args.work.context("--work DIR is required")?;
            if !work.exists() {
                return Ok(true);
            }
            let name = std::fs::read_to_string(work.join("e2e-env.version"))
                .unwrap_or_else(|_| "system".into());
            let shim_dir = std::fs::read_to_string(work.join("e2e-env.shim-dir"))
                .map(PathBuf::from)
                .unwrap_or(args.shim_dir);
            let cd = Containerd::attach(version(name.trim())?, &work, &shim_dir)?;
            let leftovers = cd.teardown("e2e-env");
            for l in &leftovers {
                eprintln!("e2e-env: cleaned up by force: {l}");
            }
            Ok(leftovers.is_empty())
        }
        "image" => {
            let out = args.out.context("--out FILE is required")?;
            image::build_layout_tar(std::path::Path::new(image::BUSYBOX_PATH), &out)?;
            Ok(true)
        }
        other => bail!("unknown command {other} (start, stop, image)"),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("e2e-env: {e:#}");
            ExitCode::FAILURE
        }
    }
}
