//! Pod networking: CNI on a bridge of its own (a server in one pod reached from another) and
//! the host network.

use crate::harness::*;

pub const HTTP_SERVER: &str = "mkdir -p /tmp/www && echo \"pong from $(hostname)\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";

/// The pod's containers share its network namespace; two pods reach each other by pod IP; the
/// IP CRI reports is the containers' own.
pub fn case_networking(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut a = run_pod(env, "net-a", |_| {})?;
    let server = a.run(&container_config(
        "server",
        &env.images.busybox,
        &["sh", "-c", HTTP_SERVER],
    ))?;
    let client_a = a.run(&sleeper("client", &env.images.busybox))?;
    env.block_on(c.wait_state(&client_a, state::RUNNING, Duration::from_secs(20)))?;
    let got = env.block_on(c.sh(&client_a, &wget_retry("http://127.0.0.1:8080/")))?;
    ensure!(
        got.trim() == "pong from net-a",
        "localhost within the pod gave {got:?}"
    );

    let ns_server = env.block_on(c.sh(&server, "readlink /proc/self/ns/net"))?;
    let ns_client = env.block_on(c.sh(&client_a, "readlink /proc/self/ns/net"))?;
    ensure!(
        ns_server == ns_client,
        "containers of one pod in different netns: {ns_server} vs {ns_client}"
    );
    let ip_a = env
        .block_on(c.pod_status(&a.id))?
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    ensure!(ip_a.starts_with(&env.net.prefix), "pod IP {ip_a:?}");
    for id in [&server, &client_a] {
        let addrs = env.block_on(c.sh(id, "ip -4 -o addr show dev eth0"))?;
        ensure!(
            addrs.contains(&format!("inet {ip_a}/")),
            "container {id} has eth0 {addrs:?}, CRI says {ip_a}"
        );
    }

    let mut b = run_pod(env, "net-b", |_| {})?;
    let client_b = b.run(&sleeper("client", &env.images.busybox))?;
    env.block_on(c.wait_state(&client_b, state::RUNNING, Duration::from_secs(20)))?;
    let ip_b = env
        .block_on(c.pod_status(&b.id))?
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    ensure!(
        ip_b != ip_a && ip_b.starts_with(&env.net.prefix),
        "pod B IP {ip_b:?}"
    );
    let ns_b = env.block_on(c.sh(&client_b, "readlink /proc/self/ns/net"))?;
    ensure!(ns_b != ns_client, "two pods share a netns");
    let got = env.block_on(c.sh(&client_b, &wget_retry(&format!("http://{ip_a}:8080/"))))?;
    ensure!(
        got.trim() == "pong from net-a",
        "pod B -> pod A by IP gave {got:?}"
    );
    b.finish()?;
    a.finish()
}

/// A hostNetwork pod's containers are in the node's network namespace.
pub fn case_host_network(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    // The kubelet sends no hostname for a hostNetwork pod: it keeps the node's UTS namespace.
    let mut pod = run_pod(env, "hostnet", |p| {
        client::pod_ns(p).network = ns::NODE;
        p.hostname.clear();
    })?;
    let id = pod.run_sleeper(&mut c)?;
    let inside = env.block_on(c.sh(&id, "readlink /proc/self/ns/net"))?;
    let host = std::fs::read_link("/proc/self/ns/net")?;
    ensure!(
        inside.trim() == host.to_string_lossy(),
        "hostNetwork container in {inside:?}, node in {host:?}"
    );
    pod.finish()
}
