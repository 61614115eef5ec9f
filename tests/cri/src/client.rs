//! A CRI client over containerd's unix socket (gRPC, `runtime.v1`), with the calls the kubelet
//! makes, and builders for pod and container configs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1;

use crate::env::HANDLER;

/// How long a single CRI call may take (pulls and stops included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Cri {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
}

/// `NamespaceMode` values of the CRI API.
pub mod ns {
    pub const POD: i32 = 0;
    pub const CONTAINER: i32 = 1;
    pub const NODE: i32 = 2;
}

/// `ContainerState` values of the CRI API.
pub mod state {
    pub const CREATED: i32 = 0;
    pub const RUNNING: i32 = 1;
    pub const EXITED: i32 = 2;
}

fn err(what: &str, e: tonic::Status) -> anyhow::Error {
    anyhow!("CRI {what}: {} ({:?})", e.message(), e.code())
}

impl Cri {
    pub async fn connect(socket: &Path) -> Result<Cri> {
        let path: PathBuf = socket.to_path_buf();
        let channel = Endpoint::try_from("http://[::]:0")?
            .timeout(CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .with_context(|| format!("connect to {}", socket.display()))?;
        Ok(Cri {
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
        })
    }

    /// The runtime's status (verbose: includes the CRI plugin's effective config).
    pub async fn status(&mut self) -> Result<cri::StatusResponse> {
        Ok(self
            .rt
            .status(cri::StatusRequest { verbose: true })
            .await
            .map_err(|e| err("Status", e))?
            .into_inner())
    }

    pub async fn pull(&mut self, image: &str) -> Result<String> {
        let resp = self
            .img
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map_err(|e| err(&format!("PullImage {image}"), e))?;
        Ok(resp.into_inner().image_ref)
    }

    pub async fn image_status(&mut self, image: &str) -> Result<Option<cri::Image>> {
        Ok(self
            .img
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map_err(|e| err("ImageStatus", e))?
            .into_inner()
            .image)
    }

    pub async fn run_pod(&mut self, config: &cri::PodSandboxConfig) -> Result<String> {
        self.run_pod_with(config, HANDLER).await
    }

    /// RunPodSandbox with runtime handler `handler` (a RuntimeClass's `handler`).
    pub async fn run_pod_with(
        &mut self,
        config: &cri::PodSandboxConfig,
        handler: &str,
    ) -> Result<String> {
        Ok(self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.to_string(),
            })
            .await
            .map_err(|e| err("RunPodSandbox", e))?
            .into_inner()
            .pod_sandbox_id)
    }

    pub async fn pod_status(&mut self, id: &str) -> Result<cri::PodSandboxStatusResponse> {
        Ok(self
            .rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            })
            .await
            .map_err(|e| err("PodSandboxStatus", e))?
            .into_inner())
    }

    pub async fn list_pods(&mut self) -> Result<Vec<String>> {
        Ok(self
            .rt
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|e| err("ListPodSandbox", e))?
            .into_inner()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect())
    }

    pub async fn stop_pod(&mut self, id: &str) -> Result<()> {
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map_err(|e| err("StopPodSandbox", e))?;
        Ok(())
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet does.
    pub async fn remove_pod(&mut self, id: &str) -> Result<()> {
        self.stop_pod(id).await?;
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map_err(|e| err("RemovePodSandbox", e))?;
        Ok(())
    }

    pub async fn create_container(
        &mut self,
        pod_id: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> Result<String> {
        Ok(self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.to_string(),
                config: Some(config.clone()),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map_err(|e| err("CreateContainer", e))?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> Result<()> {
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(|e| err("StartContainer", e))?;
        Ok(())
    }

    /// CreateContainer + StartContainer.
    pub async fn run_container(
        &mut self,
        pod_id: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> Result<String> {
        let id = self.create_container(pod_id, config, pod_config).await?;
        self.start_container(&id).await?;
        Ok(id)
    }

    pub async fn container_status(&mut self, id: &str) -> Result<cri::ContainerStatusResponse> {
        Ok(self
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            })
            .await
            .map_err(|e| err("ContainerStatus", e))?
            .into_inner())
    }

    /// The container's state and exit code.
    pub async fn container_state(&mut self, id: &str) -> Result<(i32, i32)> {
        let s = self
            .container_status(id)
            .await?
            .status
            .ok_or_else(|| anyhow!("ContainerStatus without status"))?;
        Ok((s.state, s.exit_code))
    }

    /// The host pid of the container's init, from the verbose status info.
    pub async fn container_pid(&mut self, id: &str) -> Result<i32> {
        let resp = self.container_status(id).await?;
        let info = resp
            .info
            .get("info")
            .ok_or_else(|| anyhow!("ContainerStatus verbose info missing"))?;
        let v: serde_json::Value = serde_json::from_str(info)?;
        v.get("pid")
            .and_then(|p| p.as_i64())
            .map(|p| p as i32)
            .ok_or_else(|| anyhow!("no pid in ContainerStatus info"))
    }

    pub async fn wait_state(&mut self, id: &str, want: i32, timeout: Duration) -> Result<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (s, code) = self.container_state(id).await?;
            if s == want {
                return Ok(code);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(anyhow!(
                    "container {id}: state {s} after {timeout:?}, expected {want}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop_container(&mut self, id: &str, timeout_s: i64) -> Result<()> {
        self.rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout: timeout_s,
            })
            .await
            .map_err(|e| err("StopContainer", e))?;
        Ok(())
    }

    pub async fn remove_container(&mut self, id: &str) -> Result<()> {
        self.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(|e| err("RemoveContainer", e))?;
        Ok(())
    }

    /// ExecSync: (exit code, stdout, stderr).
    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_s: i64,
    ) -> Result<(i32, String, String)> {
        let r = self
            .rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_s,
            })
            .await
            .map_err(|e| err(&format!("ExecSync {cmd:?}"), e))?
            .into_inner();
        Ok((
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        ))
    }

    /// ExecSync of `sh -c SCRIPT` that must exit 0; returns stdout.
    pub async fn sh(&mut self, id: &str, script: &str) -> Result<String> {
        let (code, out, errout) = self.exec_sync(id, &["sh", "-c", script], 30).await?;
        if code != 0 {
            return Err(anyhow!(
                "exec `{script}` in {id} exited {code}\nstdout: {out}\nstderr: {errout}"
            ));
        }
        Ok(out)
    }

    pub async fn exec_url(&mut self, req: cri::ExecRequest) -> Result<String> {
        Ok(self
            .rt
            .exec(req)
            .await
            .map_err(|e| err("Exec", e))?
            .into_inner()
            .url)
    }

    pub async fn stats(&mut self, id: &str) -> Result<cri::ContainerStats> {
        self.rt
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(|e| err("ContainerStats", e))?
            .into_inner()
            .stats
            .ok_or_else(|| anyhow!("ContainerStats without stats"))
    }

    pub async fn list_stats(&mut self, pod_id: &str) -> Result<Vec<cri::ContainerStats>> {
        Ok(self
            .rt
            .list_container_stats(cri::ListContainerStatsRequest {
                filter: Some(cri::ContainerStatsFilter {
                    pod_sandbox_id: pod_id.to_string(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|e| err("ListContainerStats", e))?
            .into_inner()
            .stats)
    }

    pub async fn update_resources(
        &mut self,
        id: &str,
        resources: cri::LinuxContainerResources,
    ) -> Result<()> {
        self.rt
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.to_string(),
                linux: Some(resources),
                ..Default::default()
            })
            .await
            .map_err(|e| err("UpdateContainerResources", e))?;
        Ok(())
    }
}

/// A pod config as the kubelet builds it: metadata, hostname, log directory, cgroup parent,
/// namespace options.
pub fn pod_config(name: &str, log_dir: &Path, cgroup_parent: &str) -> cri::PodSandboxConfig {
    let uid = format!("uid-{name}-{}", std::process::id());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.clone(),
            namespace: "cri-e2e".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{cgroup_parent}/pod{uid}"),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: ns::POD,
                    pid: ns::CONTAINER,
                    ipc: ns::POD,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Mutable access to a pod config's namespace options.
pub fn pod_ns(config: &mut cri::PodSandboxConfig) -> &mut cri::NamespaceOption {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
}

/// A container config: `image`, `command` (replaces the entrypoint when not empty), log path
/// `NAME.log` relative to the pod's log directory.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(Default::default()),
            resources: Some(Default::default()),
        }),
        ..Default::default()
    }
}

/// Mutable access to a container config's security context.
pub fn sec(config: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// Mutable access to a container config's resources.
pub fn res(config: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    config
        .linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

/// The pod's network namespace path from PodSandboxStatus's verbose info (runtime spec).
pub fn pod_netns_path(status: &cri::PodSandboxStatusResponse) -> Option<String> {
    let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
    let namespaces = info.pointer("/runtimeSpec/linux/namespaces")?.as_array()?;
    namespaces
        .iter()
        .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))
        .and_then(|n| n.get("path"))
        .and_then(|p| p.as_str())
        .map(str::to_string)
}

/// The pod's sandbox init pid from PodSandboxStatus's verbose info.
pub fn pod_pid(status: &cri::PodSandboxStatusResponse) -> Option<i32> {
    let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
    info.get("pid").and_then(|p| p.as_i64()).map(|p| p as i32)
}
