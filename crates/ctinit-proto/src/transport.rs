//! Sending and receiving a control message as both sides of the socket do: one
//! `SOCK_SEQPACKET` packet, its descriptors attached as `SCM_RIGHTS`. What an error means
//! (the peer gone, a failure to report) is for each side to say.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::{DecodeError, Message, MAX_MESSAGE};

/// The most descriptors a message carries: stdin, stdout and stderr.
const MAX_FDS: usize = 3;

/// Sends `message` with `fds` attached, as one packet; an interrupted call is retried, and a
/// gone peer is an error (`EPIPE`, `ECONNRESET`), never a SIGPIPE (`MSG_NOSIGNAL`).
pub fn send(socket: BorrowedFd<'_>, message: &Message, fds: &[RawFd]) -> Result<(), Errno> {
    let bytes = message.encode();
    let iov = [std::io::IoSlice::new(&bytes)];
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Why no message was received.
#[derive(Debug)]
pub enum ReceiveError {
    /// recvmsg(2) failed (an interrupted call is retried).
    Sys(Errno),
    /// The message or its descriptors did not fit (`MSG_TRUNC`, `MSG_CTRUNC`).
    Truncated,
    /// The packet is no message.
    Decode(DecodeError),
}

/// One message and the descriptors attached to it (close-on-exec), or `None` at EOF. `flags`
/// add to `MSG_CMSG_CLOEXEC` (`MSG_DONTWAIT` where the caller waited for the socket itself).
pub fn receive(
    socket: BorrowedFd<'_>,
    flags: MsgFlags,
) -> Result<Option<(Message, Vec<OwnedFd>)>, ReceiveError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC | flags,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ReceiveError::Sys(e)),
        };
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: the kernel just installed these descriptors for us.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
        }
        if msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
        {
            return Err(ReceiveError::Truncated);
        }
        let len = msg.bytes;
        if len == 0 {
            return Ok(None);
        }
        let message = Message::decode(&buf[..len]).map_err(ReceiveError::Decode)?;
        return Ok(Some((message, fds)));
    }
}
