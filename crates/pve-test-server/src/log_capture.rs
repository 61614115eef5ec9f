//! A log writer for the tests of what a Proxmox client logs (no secret in any line, each line
//! naming its container).

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Keeps in memory what is written to it or to any of its clones: a clone goes to the logger
/// (a `tracing` subscriber's writer, the shim's logger), the test reads what it wrote.
#[derive(Clone, Debug, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// What was written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The lines written so far (invalid UTF-8 replaced).
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.bytes())
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
