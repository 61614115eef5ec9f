//! One convention for tests the machine may not be able to run: a case that lacks what it
//! needs (root, LXC, a tool, a cgroup controller) is reported as ignored, with the missing
//! capability on its own line (`test NAME ... ignored (needs root: LXC containers)`), and counted
//! under "ignored" in the summary, not passed. Nothing is ignored up front: where the capability
//! is there (CI runs as root with everything installed) every case runs.
//!
//! The standard test harness cannot ignore a test at run time, so a test binary using this is
//! `harness = false` (libtest-mimic, which takes the same filters, `--list`, `--exact` and
//! `--test-threads` and prints the same summary lines) and lists its cases with [`main!`]:
//!
//! ```ignore
//! fn needs_lxc() -> skip_harness::Outcome {
//!     skip_harness::require_root("LXC containers")?;
//!     assert_eq!(2 + 2, 4);
//!     Ok(())
//! }
//! skip_harness::main!(needs_lxc);
//! ```

use std::fmt;

pub use libtest_mimic::{Arguments, Completion, Conclusion, Failed, Trial};

/// Why a case did not run: the capability this machine lacks, saying how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub String);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Missing {}

/// What a case whose assertions panic returns: `Err` only when it could not run.
pub type Outcome = Result<(), Missing>;

/// `Err(Missing)` with `reason` unless `present`.
pub fn require(present: bool, reason: impl Into<String>) -> Outcome {
    if present {
        Ok(())
    } else {
        Err(Missing(reason.into()))
    }
}

/// Root, which `needed_for` says why the case needs.
pub fn require_root(needed_for: &str) -> Outcome {
    require(
        nix::unistd::geteuid().is_root(),
        format!("needs root: {needed_for}"),
    )
}

/// An executable on PATH (`tool --version` starts), from Debian package `package`.
pub fn require_tool(tool: &str, package: &str) -> Outcome {
    let runs = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    require(runs, format!("{tool} not found (install {package})"))
}

/// What a case may return: an [`Outcome`] (assertions panic), or an `anyhow::Result` whose
/// error is a failure unless it is a [`Missing`].
pub trait CaseResult {
    fn into_completion(self) -> Result<Completion, Failed>;
}

impl CaseResult for Outcome {
    fn into_completion(self) -> Result<Completion, Failed> {
        match self {
            Ok(()) => Ok(Completion::Completed),
            Err(Missing(reason)) => Ok(Completion::ignored_with(reason)),
        }
    }
}

impl CaseResult for anyhow::Result<()> {
    fn into_completion(self) -> Result<Completion, Failed> {
        match self {
            Ok(()) => Ok(Completion::Completed),
            Err(e) => match e.downcast::<Missing>() {
                Ok(Missing(reason)) => Ok(Completion::ignored_with(reason)),
                Err(e) => Err(Failed::from(format!("{e:#}"))),
            },
        }
    }
}

/// A case named `name` (a panic in it is a failure, as with the standard harness).
pub fn case<R: CaseResult>(name: &str, test: impl FnOnce() -> R + Send + 'static) -> Trial {
    Trial::ignorable_test(name, move || test().into_completion())
}

/// A case that cannot run when `missing` says why, reported ignored with that reason; else
/// `test` runs (for suites that learn once, before any case, what the machine lacks).
pub fn case_unless(
    name: &str,
    missing: Option<String>,
    test: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Trial {
    Trial::ignorable_test(name, move || match missing {
        Some(reason) => Ok(Completion::ignored_with(reason)),
        None => test().map(|()| Completion::Completed),
    })
}

/// Runs `cases` with the command line's filters and exits with the harness's status.
pub fn run(cases: Vec<Trial>) -> ! {
    run_with(&Arguments::from_args(), cases).exit()
}

/// Runs `cases` and returns the summary, for suites that tear down shared state (containerd,
/// a registry) before they exit with it.
pub fn run_with(args: &Arguments, cases: Vec<Trial>) -> Conclusion {
    libtest_mimic::run(args, cases)
}

/// `fn main` running the listed case functions, each under its own name.
#[macro_export]
macro_rules! main {
    ($($case:ident),* $(,)?) => {
        fn main() {
            $crate::run(vec![$($crate::case(stringify!($case), $case)),*])
        }
    };
}
