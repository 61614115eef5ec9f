//! The shim's log: what reaches containerd's log, at which level, and which container a line
//! is about.
//!
//! - Where: the `log` FIFO in the bundle directory, which containerd opens before it starts
//!   the shim's server and copies into its own log (containerd runtime/v2 `openShimLog`), in
//!   logrus' text format as the Go shims write it: `time="..." level=info msg="..."`.
//! - Which container: every line written while an RPC for a container runs, or a task that
//!   RPC spawned through [`spawn`] / [`spawn_blocking`], carries `id="<container id>"` and,
//!   under the pve driver, `vmid="<VMID>"`. The context is a tokio task-local set once where
//!   RPCs enter ([`ContainerScoped`]), so no log call has to name the container itself.
//! - The Proxmox client logs through `tracing`; with no tracing subscriber, tracing's `log`
//!   feature (enabled in this crate's Cargo.toml) turns its events into `log` records, so its
//!   retries, task warnings and certificate mismatches land here too, with their fields.
//! - Level: containerd's `-debug` is a floor that no configuration lowers
//!   ([`effective_level`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::shim::shim::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::protos::types::empty::Empty;
use log::LevelFilter;

/// The environment variable the shim framework reads for the level (containerd-shim
/// `logger::LOG_ENV`); set in containerd's environment, it wins over the configuration.
pub const LEVEL_ENV: &str = "RUST_LOG";

/// Which container a log line is about.
#[derive(Debug)]
pub struct ContainerContext {
    id: String,
    /// Known once the pve driver has allocated it (during Create).
    vmid: OnceLock<u32>,
}

impl ContainerContext {
    pub fn new(id: &str) -> Arc<ContainerContext> {
        Arc::new(ContainerContext {
            id: id.to_string(),
            vmid: OnceLock::new(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn vmid(&self) -> Option<u32> {
        self.vmid.get().copied()
    }
}

tokio::task_local! {
    static CONTAINER: Arc<ContainerContext>;
}

thread_local! {
    /// The context of the task that started a [`spawn_blocking`] closure, while it runs.
    static BLOCKING_CONTAINER: RefCell<Option<Arc<ContainerContext>>> = const { RefCell::new(None) };
}

/// The container the running code works for, if any.
pub fn current() -> Option<Arc<ContainerContext>> {
    CONTAINER
        .try_with(Arc::clone)
        .ok()
        .or_else(|| BLOCKING_CONTAINER.with(|c| c.borrow().clone()))
}

/// Runs `work` as work for `context`'s container.
pub async fn scope<F: Future>(context: Arc<ContainerContext>, work: F) -> F::Output {
    CONTAINER.scope(context, work).await
}

/// Records the VMID of the current container (the pve driver calls this once it has one);
/// later lines of this container carry it.
pub fn set_vmid(vmid: u32) {
    if let Some(context) = current() {
        let _ = context.vmid.set(vmid);
    }
}

/// `tokio::spawn`, keeping the current container's context: for a container's background
/// tasks (its init's exit, an exec's exit, OOM watches). Task-locals are not inherited.
pub fn spawn<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match current() {
        Some(context) => tokio::spawn(CONTAINER.scope(context, work)),
        None => tokio::spawn(work),
    }
}

/// `tokio::task::spawn_blocking`, keeping the current container's context.
pub fn spawn_blocking<F, R>(work: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let context = current();
    tokio::task::spawn_blocking(move || {
        let previous = BLOCKING_CONTAINER.with(|c| c.replace(context));
        let result = work();
        BLOCKING_CONTAINER.with(|c| *c.borrow_mut() = previous);
        result
    })
}

/// The level: `RUST_LOG` when set to a level, else the configured `log_level`, else info; with
/// containerd's `-debug` never less than debug. (The framework's own logger applied `-debug`
/// at start only, and Create's `log_level` then replaced it.)
pub fn effective_level(debug: bool, env: Option<&str>, configured: Option<&str>) -> LevelFilter {
    let parse = |text: &str| text.trim().parse::<LevelFilter>().ok();
    let level = env
        .and_then(parse)
        .or_else(|| configured.and_then(parse))
        .unwrap_or(LevelFilter::Info);
    if debug {
        level.max(LevelFilter::Debug)
    } else {
        level
    }
}

/// containerd's `-debug` for this shim, once the logger is installed.
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Applies a configured `log_level` (the runtime options' of a Create), under the precedence of
/// [`effective_level`]; `None` leaves the level as it is.
pub fn apply_configured_level(configured: Option<&str>) {
    if configured.is_none() {
        return;
    }
    let env = std::env::var(LEVEL_ENV).ok();
    log::set_max_level(effective_level(
        DEBUG.load(Ordering::Relaxed),
        env.as_deref(),
        configured,
    ));
}

/// Installs the shim's logger writing to `out`, at the level [`effective_level`] gives.
pub fn install(
    out: Box<dyn Write + Send>,
    debug: bool,
    configured: Option<&str>,
) -> Result<(), log::SetLoggerError> {
    log::set_boxed_logger(Box::new(ShimLogger {
        out: Mutex::new(out),
    }))?;
    DEBUG.store(debug, Ordering::Relaxed);
    let env = std::env::var(LEVEL_ENV).ok();
    log::set_max_level(effective_level(debug, env.as_deref(), configured));
    Ok(())
}

/// Installs the logger on containerd's `log` FIFO in the current (bundle) directory, as the
/// framework's logger would (containerd-shim `logger::init`).
pub fn init(debug: bool, configured: Option<&str>) -> std::io::Result<()> {
    let fifo = std::fs::OpenOptions::new().write(true).open("log")?;
    install(Box::new(fifo), debug, configured).map_err(std::io::Error::other)
}

struct ShimLogger {
    out: Mutex<Box<dyn Write + Send>>,
}

/// Crates whose debug lines are the shim's: at debug, the HTTP and TLS stack's own chatter
/// (reqwest, hyper, rustls: a dozen lines per request) would bury them; it shows at trace.
const OWN_TARGETS: [&str; 5] = [
    "shim",
    "containerd_shim",
    "pve_client",
    "lxc_config",
    "containerd_shim_proxmox_lxc_v2",
];

fn is_own_target(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    OWN_TARGETS.contains(&krate)
}

impl log::Log for ShimLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let max = log::max_level();
        metadata.level() <= max
            && (metadata.level() <= log::Level::Info
                || max >= LevelFilter::Trace
                || is_own_target(metadata.target()))
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(record, current().as_deref());
        // One write per line, so lines of concurrent tasks do not interleave. A containerd that
        // went away (EPIPE; SIGPIPE is ignored) must not take the shim with it.
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = out.write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = self
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
    }
}

/// One line in logrus' text format (containerd's own and the Go shims'):
/// `time="RFC 3339" level=info id="c1" vmid="900001" msg="..."`.
pub fn format_line(record: &log::Record, container: Option<&ContainerContext>) -> String {
    let time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // logrus' level names.
    let level = match record.level() {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    let mut line = format!("time={} level={level}", quoted(&time));
    if let Some(c) = container {
        line.push_str(&format!(" id={}", quoted(c.id())));
        if let Some(vmid) = c.vmid() {
            line.push_str(&format!(" vmid=\"{vmid}\""));
        }
    }
    line.push_str(&format!(" msg={}\n", quoted(&record.args().to_string())));
    line
}

/// A logfmt value in double quotes: a message with quotes or several lines (a task log) stays
/// one parseable line.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The Task service with every RPC run in its container's context ([`scope`]): the one place
/// where RPCs for a container enter. A context is made by Create and dropped by the
/// container's Delete; an RPC for an unknown id gets a passing one.
pub struct ContainerScoped<T> {
    inner: T,
    contexts: Mutex<HashMap<String, Arc<ContainerContext>>>,
}

impl<T> ContainerScoped<T> {
    pub fn new(inner: T) -> ContainerScoped<T> {
        ContainerScoped {
            inner,
            contexts: Mutex::default(),
        }
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn contexts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ContainerContext>>> {
        self.contexts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn context(&self, id: &str) -> Arc<ContainerContext> {
        self.contexts()
            .get(id)
            .cloned()
            .unwrap_or_else(|| ContainerContext::new(id))
    }
}

/// The RPCs that only need their container's context.
macro_rules! container_scoped_task {
    ($($rpc:ident: $request:ty => $response:ty),* $(,)?) => {
        #[async_trait]
        impl<T: Task + Send + Sync> Task for ContainerScoped<T> {
            $(
                async fn $rpc(
                    &self,
                    ctx: &TtrpcContext,
                    req: $request,
                ) -> containerd_shim::protos::ttrpc::Result<$response> {
                    let context = self.context(&req.id);
                    scope(context, self.inner.$rpc(ctx, req)).await
                }
            )*

            async fn create(
                &self,
                ctx: &TtrpcContext,
                req: CreateTaskRequest,
            ) -> containerd_shim::protos::ttrpc::Result<CreateTaskResponse> {
                let id = req.id.clone();
                let context = ContainerContext::new(&id);
                let result = scope(context.clone(), self.inner.create(ctx, req)).await;
                if result.is_ok() {
                    self.contexts().insert(id, context);
                }
                result
            }

            async fn delete(
                &self,
                ctx: &TtrpcContext,
                req: DeleteRequest,
            ) -> containerd_shim::protos::ttrpc::Result<DeleteResponse> {
                let id = req.id.clone();
                let whole_container = req.exec_id.is_empty();
                let result = scope(self.context(&id), self.inner.delete(ctx, req)).await;
                if whole_container && result.is_ok() {
                    self.contexts().remove(&id);
                }
                result
            }
        }
    };
}

container_scoped_task! {
    state: StateRequest => StateResponse,
    start: StartRequest => StartResponse,
    pids: PidsRequest => PidsResponse,
    pause: PauseRequest => Empty,
    resume: ResumeRequest => Empty,
    checkpoint: CheckpointTaskRequest => Empty,
    kill: KillRequest => Empty,
    exec: ExecProcessRequest => Empty,
    resize_pty: ResizePtyRequest => Empty,
    close_io: CloseIORequest => Empty,
    update: UpdateTaskRequest => Empty,
    wait: WaitRequest => WaitResponse,
    stats: StatsRequest => StatsResponse,
    connect: ConnectRequest => ConnectResponse,
    shutdown: ShutdownRequest => Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_flag_is_a_floor_no_configuration_lowers() {
        use LevelFilter::*;
        // Nothing set: info.
        assert_eq!(effective_level(false, None, None), Info);
        // The configuration (host file, or a Create's runtime options).
        assert_eq!(effective_level(false, None, Some("warn")), Warn);
        assert_eq!(effective_level(false, None, Some("trace")), Trace);
        // containerd's -debug: at least debug, whatever the configuration says...
        assert_eq!(effective_level(true, None, None), Debug);
        assert_eq!(effective_level(true, None, Some("info")), Debug);
        assert_eq!(effective_level(true, None, Some("error")), Debug);
        // ...but a more verbose configuration still counts.
        assert_eq!(effective_level(true, None, Some("trace")), Trace);
        // RUST_LOG in containerd's environment wins over the configuration, not over -debug.
        assert_eq!(effective_level(false, Some("error"), Some("debug")), Error);
        assert_eq!(effective_level(true, Some("error"), Some("info")), Debug);
        // Something that is not a level (an env_logger filter) is ignored.
        assert_eq!(
            effective_level(false, Some("pve_client=debug"), Some("warn")),
            Warn
        );
    }

    #[test]
    fn lines_are_logrus_text_with_the_container() {
        let context = ContainerContext::new("web-1");
        let _ = context.vmid.set(900_123);
        let line = format_line(
            &log::Record::builder()
                .level(log::Level::Warn)
                .args(format_args!("task said \"no\"\nsecond line"))
                .build(),
            Some(&context),
        );
        assert!(line.starts_with("time=\""), "{line}");
        assert!(
            line.ends_with(
                " level=warning id=\"web-1\" vmid=\"900123\" msg=\"task said \\\"no\\\"\\nsecond line\"\n"
            ),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
        let plain = format_line(
            &log::Record::builder()
                .level(log::Level::Info)
                .args(format_args!("shim started"))
                .build(),
            None,
        );
        assert!(
            plain.ends_with(" level=info msg=\"shim started\"\n"),
            "{plain}"
        );
    }

    #[test]
    fn own_targets_are_the_shims_crates() {
        assert!(is_own_target("pve_client::client"));
        assert!(is_own_target("shim::task::container"));
        assert!(is_own_target("containerd_shim::asynchronous"));
        assert!(!is_own_target("rustls::client::hs"));
        assert!(!is_own_target("hyper_util::client::legacy::connect::http"));
    }

    #[tokio::test]
    async fn context_follows_spawned_work() {
        let context = ContainerContext::new("c1");
        let (in_task, in_blocking, outside) = scope(context, async {
            set_vmid(900_001);
            let task = spawn(async { current().map(|c| (c.id().to_string(), c.vmid())) });
            let blocking = spawn_blocking(|| current().map(|c| (c.id().to_string(), c.vmid())));
            let outside = tokio::spawn(async { current().is_none() });
            (
                task.await.unwrap(),
                blocking.await.unwrap(),
                outside.await.unwrap(),
            )
        })
        .await;
        let want = Some(("c1".to_string(), Some(900_001)));
        assert_eq!(in_task, want);
        assert_eq!(in_blocking, want);
        assert!(outside, "plain tokio::spawn carries no context");
        assert!(current().is_none());
    }
}
