//! The environment and the executable lookup, following runc: the spec's env replaces
//! everything (duplicates keep their first position and last value), HOME is added from
//! /etc/passwd when missing, and `args[0]` without a `/` is searched in that env's PATH
//! exactly like Go's `exec.LookPath`, with its error texts.

use std::ffi::CString;
use std::path::Path;

use nix::errno::Errno;

use crate::sys::{describe, Failure};

/// Validates and de-duplicates `KEY=VALUE` entries the way runc's environment setup does.
pub fn build_env(entries: &[String]) -> Result<Vec<(String, String)>, Failure> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(entries.len() + 1);
    for entry in entries {
        let (key, value) = entry.split_once('=').ok_or_else(|| {
            Failure::new(format!(
                "invalid environment variable {entry:?}: missing '='"
            ))
        })?;
        if key.is_empty() {
            return Err(Failure::new(format!(
                "invalid environment variable {entry:?}: name cannot be empty"
            )));
        }
        if entry.contains('\0') {
            return Err(Failure::new(format!(
                "invalid environment variable {key:?}: contains nul byte"
            )));
        }
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => env.push((key.to_string(), value.to_string())),
        }
    }
    Ok(env)
}

pub fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// runc sets HOME from the user's /etc/passwd entry (or `/`) when the spec has none.
pub fn add_home(env: &mut Vec<(String, String)>, uid: u32, passwd: Option<&str>) {
    if get(env, "HOME").is_some_and(|home| !home.is_empty()) {
        return;
    }
    let home = passwd
        .and_then(|text| home_of(text, uid))
        .unwrap_or_else(|| "/".to_string());
    match env.iter_mut().find(|(k, _)| k == "HOME") {
        Some(slot) => slot.1 = home,
        None => env.push(("HOME".to_string(), home)),
    }
}

/// The home directory of the first /etc/passwd entry with this uid.
pub fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || fields[2].parse::<u32>().ok()? != uid {
            return None;
        }
        Some(fields[5].to_string())
    })
}

pub fn to_cstrings(env: &[(String, String)]) -> Result<Vec<CString>, Failure> {
    env.iter()
        .map(|(k, v)| crate::sys::cstring("environment variable", &format!("{k}={v}")))
        .collect()
}

/// Go's `findExecutable`: exists, not a directory, executable for this (effective) user.
fn find_executable(path: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let errno = e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO);
        format!("stat {path}: {}", describe(errno))
    })?;
    if meta.is_dir() {
        return Err(describe(Errno::EISDIR));
    }
    let c = CString::new(path).map_err(|_| describe(Errno::EINVAL))?;
    // SAFETY: valid C string.
    let ret = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    if ret < 0 {
        return Err(describe(Errno::last()));
    }
    Ok(())
}

/// Resolves `file` like Go's `exec.LookPath` with `path` as `$PATH`.
pub fn look_path(file: &str, path: Option<&str>) -> Result<String, Failure> {
    if file.contains('/') {
        return find_executable(file)
            .map(|()| file.to_string())
            .map_err(|why| Failure::new(format!("exec: {file:?}: {why}")));
    }
    for dir in path
        .unwrap_or("")
        .split(':')
        .filter(|_| path.is_some_and(|p| !p.is_empty()))
    {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(file);
        let Some(candidate) = candidate.to_str() else {
            continue;
        };
        if find_executable(candidate).is_ok() {
            return Ok(candidate.to_string());
        }
    }
    Err(Failure::new(format!(
        "exec: {file:?}: executable file not found in $PATH"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn env_replaces_and_dedups_like_runc() {
        let env =
            build_env(&["A=1".into(), "B=x=y".into(), "A=2".into(), "EMPTY=".into()]).unwrap();
        assert_eq!(
            env,
            vec![
                ("A".into(), "2".into()),
                ("B".into(), "x=y".into()),
                ("EMPTY".into(), "".into())
            ]
        );
        assert!(build_env(&["NOEQUALS".into()])
            .unwrap_err()
            .0
            .contains("missing '='"));
        assert!(build_env(&["=v".into()])
            .unwrap_err()
            .0
            .contains("name cannot be empty"));
    }

    #[test]
    fn home_comes_from_passwd_only_when_missing() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n";
        let mut env = build_env(&["PATH=/bin".into()]).unwrap();
        add_home(&mut env, 1000, Some(passwd));
        assert_eq!(get(&env, "HOME"), Some("/home/bob"));

        let mut env = build_env(&["HOME=/mine".into()]).unwrap();
        add_home(&mut env, 0, Some(passwd));
        assert_eq!(get(&env, "HOME"), Some("/mine"));

        let mut env = Vec::new();
        add_home(&mut env, 4242, Some(passwd));
        assert_eq!(get(&env, "HOME"), Some("/"));
        let mut env = Vec::new();
        add_home(&mut env, 0, None);
        assert_eq!(get(&env, "HOME"), Some("/"));
    }

    #[test]
    fn look_path_follows_go_exec() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let noexec = a.join("tool");
        std::fs::write(&noexec, "x").unwrap();
        std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
        let exe = b.join("tool");
        std::fs::write(&exe, "x").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(b.join("adir")).unwrap();
        let path = format!("{}:{}", a.display(), b.display());

        assert_eq!(
            look_path("tool", Some(&path)).unwrap(),
            exe.to_str().unwrap()
        );
        assert_eq!(
            look_path("nope", Some(&path)).unwrap_err().0,
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            look_path("tool", None).unwrap_err().0,
            "exec: \"tool\": executable file not found in $PATH"
        );
        assert_eq!(
            look_path("tool", Some("")).unwrap_err().0,
            "exec: \"tool\": executable file not found in $PATH"
        );
        assert!(look_path("adir", Some(&path)).is_err());
        // With a slash: no PATH search, the file itself is checked.
        let exe_str = exe.to_str().unwrap();
        assert_eq!(look_path(exe_str, None).unwrap(), exe_str);
        let missing = format!("{}/missing", dir.path().display());
        assert_eq!(
            look_path(&missing, Some(&path)).unwrap_err().0,
            format!("exec: {missing:?}: stat {missing}: no such file or directory")
        );
        let adir = b.join("adir");
        assert_eq!(
            look_path(adir.to_str().unwrap(), None).unwrap_err().0,
            format!("exec: {:?}: is a directory", adir.to_str().unwrap())
        );
    }
}
