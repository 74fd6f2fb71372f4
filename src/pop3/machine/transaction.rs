//! The TRANSACTION state of a POP3 session (RFC 1939 §5): STAT, LIST, UIDL, RETR, TOP, DELE,
//! RSET, NOOP, and QUIT into the UPDATE state (§6); with the set of messages marked deleted.

use super::*;

impl Session {
    pub(super) fn transaction(&mut self, cmd: Command) -> Output {
        match cmd {
            Command::Capa => return Output::cont(self.capabilities()),
            Command::Quit => return self.quit(),
            _ => {}
        }
        let State::Transaction {
            mailbox, deleted, ..
        } = &mut self.state
        else {
            return Output::cont(Reply::session_closed());
        };
        let messages = &mailbox.messages;
        let reply = match cmd {
            Command::Stat => {
                let (count, octets) = totals(mailbox, deleted);
                Reply::stat(count, octets)
            }
            Command::List(None) => {
                let (count, octets) = totals(mailbox, deleted);
                let entries: Vec<(u32, u64)> = visible(mailbox, deleted)
                    .map(|(n, m)| (n, m.size))
                    .collect();
                Reply::scan_listings(count, octets, &entries)
            }
            Command::Uidl(None) => {
                let entries: Vec<(u32, &str)> = visible(mailbox, deleted)
                    .map(|(n, m)| (n, m.uid.as_str()))
                    .collect();
                Reply::unique_ids(&entries)
            }
            Command::List(Some(n)) => match lookup(messages, deleted, n) {
                Ok((_, m)) => Reply::scan_listing(n, m.size),
                Err(reply) => reply,
            },
            Command::Uidl(Some(n)) => match lookup(messages, deleted, n) {
                Ok((_, m)) => Reply::unique_id(n, &m.uid),
                Err(reply) => reply,
            },
            Command::Retr(n) | Command::Top(n, _) => {
                let top = match cmd {
                    Command::Top(_, lines) => Some(lines),
                    _ => None,
                };
                return match lookup(messages, deleted, n) {
                    Ok((_, m)) => {
                        let reply = if top.is_some() {
                            Reply::top()
                        } else {
                            Reply::retr(m.size)
                        };
                        let path = m.path.clone();
                        Output::new(reply, Action::SendMessage { path, top })
                    }
                    Err(reply) => Output::cont(reply),
                };
            }
            Command::Dele(n) => match lookup(messages, deleted, n) {
                Ok((i, _)) => {
                    deleted.insert(i);
                    Reply::deleted(n)
                }
                Err(reply) => reply,
            },
            Command::Rset => {
                deleted.clear();
                let (count, octets) = totals(mailbox, deleted);
                Reply::maildrop(count, octets)
            }
            Command::Noop => Reply::noop(),
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. }
            | Command::Stls => Reply::already_authenticated(),
            Command::Capa | Command::Quit => Reply::session_closed(), // handled above
        };
        Output::cont(reply)
    }

    fn quit(&mut self) -> Output {
        let State::Transaction {
            mailbox, deleted, ..
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Output::closing(Reply::session_closed());
        };
        let delete: Vec<PathBuf> = (0..mailbox.messages.len())
            .filter(|&i| deleted.contains(i))
            .map(|i| mailbox.messages[i].path.clone())
            .collect();
        let remaining = mailbox.messages.len() - delete.len();
        self.state = State::Updating { remaining };
        Output::new(Reply::empty(), Action::Commit { delete })
    }
}

/// The messages not marked as deleted, with their 1-based numbers.
fn visible<'a>(
    mailbox: &'a Mailbox,
    deleted: &'a Deleted,
) -> impl Iterator<Item = (u32, &'a MessageInfo)> + 'a {
    // Message numbers are u32 on the wire; a maildrop of more than u32::MAX messages shows
    // its first u32::MAX.
    (1..=u32::MAX)
        .zip(mailbox.messages.iter())
        .enumerate()
        .filter(|(i, _)| !deleted.contains(*i))
        .map(|(_, entry)| entry)
}

/// Count and total size of the messages not marked as deleted.
pub(super) fn totals(mailbox: &Mailbox, deleted: &Deleted) -> (usize, u64) {
    visible(mailbox, deleted).fold((0, 0), |(n, octets), (_, m)| {
        (n + 1, octets.saturating_add(m.size))
    })
}

/// Message `n` (1-based) with its index, unless it is out of range or deleted.
fn lookup<'a>(
    messages: &'a [MessageInfo],
    deleted: &Deleted,
    n: u32,
) -> Result<(usize, &'a MessageInfo), Reply> {
    let i = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
    let Some((i, m)) = i.and_then(|i| messages.get(i).map(|m| (i, m))) else {
        return Err(Reply::no_such_message());
    };
    if deleted.contains(i) {
        return Err(Reply::already_deleted());
    }
    Ok((i, m))
}

/// The set of message indexes marked with DELE.
#[derive(Debug, Clone)]
pub(super) struct Deleted {
    words: Vec<u64>,
}

impl Deleted {
    pub(super) fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn insert(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }
}
