//! The shim protocol: `start` (one shim per pod, grouped by the CRI sandbox id), `delete` (clean
//! up from the bundle alone, even after the shim died), and serving the Task API.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{ExitSignal, Shim};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::shim::oci::Options as RuncOptions;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use containerd_shim::{api::DeleteResponse, Config, Flags, StartOpts};
use log::{info, warn};

use crate::config::ShimConfig;
use crate::host::process::exits::ChildExits;
use crate::logging::ContainerScoped;
use crate::task::container::teardown;
use crate::task::events::timestamp;
use crate::task::record::{state_dir_for, BundleRecord};
use crate::task::TaskService;
use crate::RUNTIME_NAME;

/// CRI annotation naming the pod sandbox a container belongs to.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub struct Service {
    namespace: String,
    id: String,
    exit: Arc<ExitSignal>,
    /// containerd's `-debug`: the floor of the log level (see `crate::logging`).
    debug: bool,
}

/// The framework's configuration. The shim installs its own logger (`crate::logging`: the
/// container of each line, the Proxmox client's messages, `-debug` kept after a Create), so
/// the framework's is off.
pub fn shim_config() -> Config {
    Config {
        no_setup_logger: true,
        ..Default::default()
    }
}

/// `-info`: a RuntimeInfo protobuf on stdout, as containerd 2.x asks for.
pub fn runtime_info() -> Result<Vec<u8>, String> {
    // containerd 2.x writes the runtime's options (an `Any`) to stdin; the driver they select
    // is what this runtime would use. A terminal or an empty stdin means the host config.
    let options = read_info_stdin()
        .and_then(|bytes| Any::parse_from_bytes(&bytes).ok())
        .filter(|any| !any.type_url.is_empty());
    let config = crate::config::from_create_options(options.as_ref()).map_err(|e| e.to_string())?;
    let driver = match config.driver() {
        crate::config::DriverKind::Lxc => "lxc",
        crate::config::DriverKind::Pve => "pve",
    };
    let features = crate::host::node::features::document(driver);
    let info = RuntimeInfo {
        name: RUNTIME_NAME.to_string(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }),
        features: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
                .to_string(),
            value: serde_json::to_vec(&features).map_err(|e| e.to_string())?,
            ..Default::default()
        }),
        ..Default::default()
    };
    info.write_to_bytes().map_err(|e| e.to_string())
}

/// What containerd wrote to `-info`'s stdin, if anything arrives soon; never blocks on a
/// terminal or on a writer that keeps the pipe open without writing.
fn read_info_stdin() -> Option<Vec<u8>> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    if nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        return None;
    }
    let mut fds = [nix::poll::PollFd::new(
        stdin.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(500u16)) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    let mut bytes = Vec::new();
    stdin.lock().take(1 << 20).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Descriptors the shim inherited (containerd leaves some open) must not leak on into
/// lxc-start, lxc-attach or hooks: mark every one above stderr close-on-exec.
fn close_on_exec_inherited() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl with integer arguments touches no memory; a number closed since it was
        // listed (the listing's own) fails with EBADF, and all that can change is the flag.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// The pod this container belongs to, from the bundle's config.json (cwd of `start`).
fn grouping(bundle: &Path, id: &str) -> String {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok();
    spec.and_then(|s| s.annotations().clone())
        .and_then(|a| a.get(SANDBOX_ID_ANNOTATION).cloned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.to_string())
}

/// Reads what containerd wrote on stdin for `start`: runc-style options (containerd 1.6-2.2
/// send the runtime's options here) or, from 2.3 on, a bootstrap message. Only a runc Options
/// `shim_cgroup` is used; anything that does not decode as that is ignored, never misread.
fn shim_cgroup_from_stdin() -> Option<String> {
    let mut data = Vec::new();
    std::io::stdin().read_to_end(&mut data).ok()?;
    if data.is_empty() {
        return None;
    }
    let any = Any::parse_from_bytes(&data).ok()?;
    if !any.type_url.ends_with("containerd.runc.v1.Options") {
        return None;
    }
    let opts = RuncOptions::parse_from_bytes(&any.value).ok()?;
    Some(opts.shim_cgroup).filter(|c| !c.is_empty())
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

async fn socket_is_live(address: &str) -> bool {
    containerd_shim::protos::shim_async::Client::connect(address)
        .await
        .is_ok()
}

#[async_trait]
impl Shim for Service {
    type T = ContainerScoped<TaskService>;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            exit: Arc::new(ExitSignal::default()),
            debug: args.debug,
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        use std::os::unix::process::CommandExt;
        let bundle = std::env::current_dir()
            .map_err(|e| containerd_shim::Error::Other(format!("start: current directory: {e}")))?;
        let group = grouping(&bundle, &opts.id);
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &group);
        let cgroup = shim_cgroup_from_stdin();
        // A pod's later containers reuse the running shim.
        if Path::new(socket_path(&address)).exists() && socket_is_live(&address).await {
            std::fs::write(bundle.join("address"), &address)
                .map_err(|e| containerd_shim::Error::Other(format!("write address file: {e}")))?;
            return Ok(address);
        }
        let exe = std::env::current_exe()
            .map_err(|e| containerd_shim::Error::Other(format!("current exe: {e}")))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.current_dir(&bundle)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .args([
                "-namespace",
                &opts.namespace,
                "-id",
                &opts.id,
                "-address",
                &opts.address,
                "-socket",
                &address,
            ]);
        if opts.debug {
            cmd.arg("-debug");
        }
        // Own process group: a signal to containerd's group (a restart) must not reach us.
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| containerd_shim::Error::Other(format!("spawn shim server: {e}")))?;
        if let Some(cg) = cgroup {
            if let Err(e) = containerd_shim::cgroup::add_task_to_cgroup(&cg, child.id()) {
                warn!("move shim to cgroup {cg}: {e}");
            }
        }
        if let Err(e) = containerd_shim::cgroup::adjust_oom_score(child.id()) {
            warn!("adjust shim oom score: {e}");
        }
        // The server closes its stdout once it listens.
        if let Some(mut out) = child.stdout.take() {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        }
        std::fs::write(bundle.join("address"), &address)
            .map_err(|e| containerd_shim::Error::Other(format!("write address file: {e}")))?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let killed = |pid: u32| DeleteResponse {
            pid,
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::some(timestamp(SystemTime::now())),
            ..Default::default()
        };
        if BundleRecord::is_finished(&bundle) {
            info!("delete {}: already taken down by its shim", self.id);
            return Ok(killed(0));
        }
        let record = BundleRecord::read(&bundle);
        let (state_dir, rootfs_mounted, pid) = match &record {
            Some(r) => (r.state_dir.clone(), r.rootfs_mounted, r.init_pid),
            // Without our record, the rootfs may still be mounted by us.
            None => (state_dir_for(&self.namespace, &self.id), true, 0),
        };
        info!("delete {} from bundle {}", self.id, bundle.display());
        match ChildExits::start().await {
            Ok(exits) => {
                let recorded = record.as_ref().map(|r| (&r.driver, r.name.as_str()));
                let containers =
                    crate::driver::recover(recorded, &self.namespace, &self.id, &state_dir, exits)
                        .await;
                teardown(&containers, &state_dir, &bundle, rootfs_mounted).await;
            }
            Err(e) => warn!("delete: cannot watch children: {e}"),
        }
        Ok(killed(pid))
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        // Where the framework would have set up its logger: only the server logs to
        // containerd's `log` FIFO (in the bundle directory, the current one).
        let host_level = ShimConfig::load_host().ok().and_then(|c| c.log_level);
        if let Err(e) = crate::logging::init(self.debug, host_level.as_deref()) {
            eprintln!("{RUNTIME_NAME}: cannot open containerd's log FIFO ./log: {e}");
            std::process::exit(1);
        }
        close_on_exec_inherited();
        match TaskService::new(&self.namespace, publisher, self.exit.clone()).await {
            Ok(t) => ContainerScoped::new(t),
            Err(e) => {
                log::error!("cannot start the task service: {e}");
                std::process::exit(1);
            }
        }
    }
}
