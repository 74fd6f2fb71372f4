//! The three NTLM messages (MS-NLMP §2.2.1), sans-IO: NEGOTIATE (§2.2.1.1), CHALLENGE
//! (§2.2.1.2) and AUTHENTICATE (§2.2.1.3), each parsed from and encoded to its raw bytes, with
//! the AV_PAIR target information (§2.2.2.1) and the Unicode / OEM string forms (§2.2.2.5,
//! §2.2.2.10).
//!
//! Parsing is bounded and total: a message longer than [`MAX_TOKEN_LEN`], shorter than its fixed
//! header, without the `NTLMSSP\0` signature, of the wrong type, or with a field whose offset
//! and length reach past the message is an [`Error`], never a panic. Non-empty payload fields
//! may not overlap the fixed header; empty fields are not checked (clients write arbitrary
//! offsets there). The server parses NEGOTIATE and AUTHENTICATE and encodes CHALLENGE; the other
//! directions exist for tests and clients.

use super::super::MAX_TOKEN_LEN;

/// The signature every NTLM message opens with.
pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// NEGOTIATE flags (MS-NLMP §2.2.2.5) that this implementation reads or writes.
pub mod flags {
    /// NTLMSSP_NEGOTIATE_UNICODE: strings are UTF-16LE.
    pub const UNICODE: u32 = 0x0000_0001;
    /// NTLM_NEGOTIATE_OEM: strings are in the OEM character set.
    pub const OEM: u32 = 0x0000_0002;
    /// NTLMSSP_REQUEST_TARGET: the client asks for the target name.
    pub const REQUEST_TARGET: u32 = 0x0000_0004;
    /// NTLMSSP_NEGOTIATE_SIGN.
    pub const SIGN: u32 = 0x0000_0010;
    /// NTLMSSP_NEGOTIATE_SEAL.
    pub const SEAL: u32 = 0x0000_0020;
    /// NTLMSSP_NEGOTIATE_LM_KEY (never granted here).
    pub const LM_KEY: u32 = 0x0000_0080;
    /// NTLMSSP_NEGOTIATE_NTLM.
    pub const NTLM: u32 = 0x0000_0200;
    /// NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED.
    pub const OEM_DOMAIN_SUPPLIED: u32 = 0x0000_1000;
    /// NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED.
    pub const OEM_WORKSTATION_SUPPLIED: u32 = 0x0000_2000;
    /// NTLMSSP_NEGOTIATE_ALWAYS_SIGN.
    pub const ALWAYS_SIGN: u32 = 0x0000_8000;
    /// NTLMSSP_TARGET_TYPE_DOMAIN: the target name is a domain.
    pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
    /// NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY (the NTLM2 session response for NTLMv1).
    pub const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
    /// NTLMSSP_NEGOTIATE_TARGET_INFO: the CHALLENGE carries target information.
    pub const TARGET_INFO: u32 = 0x0080_0000;
    /// NTLMSSP_NEGOTIATE_VERSION.
    pub const VERSION: u32 = 0x0200_0000;
    /// NTLMSSP_NEGOTIATE_128.
    pub const N128: u32 = 0x2000_0000;
    /// NTLMSSP_NEGOTIATE_KEY_EXCH.
    pub const KEY_EXCH: u32 = 0x4000_0000;
    /// NTLMSSP_NEGOTIATE_56.
    pub const N56: u32 = 0x8000_0000;
}

/// AV_PAIR identifiers (MS-NLMP §2.2.2.1) written in the target information.
pub mod av {
    /// MsvAvEOL: the end of the list.
    pub const EOL: u16 = 0;
    /// MsvAvNbComputerName: the server's NetBIOS computer name.
    pub const NB_COMPUTER_NAME: u16 = 1;
    /// MsvAvNbDomainName: the server's NetBIOS domain name.
    pub const NB_DOMAIN_NAME: u16 = 2;
    /// MsvAvDnsComputerName: the server's fully qualified host name.
    pub const DNS_COMPUTER_NAME: u16 = 3;
    /// MsvAvDnsDomainName: the server's DNS domain.
    pub const DNS_DOMAIN_NAME: u16 = 4;
    /// MsvAvTimestamp: a FILETIME, little-endian.
    pub const TIMESTAMP: u16 = 7;
}

/// Message type numbers (MS-NLMP §2.2.1).
const NEGOTIATE: u32 = 1;
const CHALLENGE: u32 = 2;
const AUTHENTICATE: u32 = 3;

/// Fixed header length of NEGOTIATE up to its workstation field.
const NEGOTIATE_HEADER: usize = 32;
/// Fixed header length of CHALLENGE including the version field.
const CHALLENGE_HEADER: usize = 56;
/// Fixed header length of AUTHENTICATE up to its workstation field (older clients stop there).
const AUTHENTICATE_MIN_HEADER: usize = 52;
/// Fixed header length of AUTHENTICATE with session key and flags.
const AUTHENTICATE_HEADER: usize = 64;

/// Why an NTLM message was refused; [`Error::reason`] is the text for `Failure::Malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("NTLM message too long")]
    TooLong,
    /// Shorter than the fixed header of its type.
    #[error("NTLM message truncated")]
    Truncated,
    /// No `NTLMSSP\0` signature.
    #[error("not an NTLM message (bad signature)")]
    Signature,
    /// Another message type was expected.
    #[error("{0}")]
    WrongType(&'static str),
    /// A field's offset and length reach past the message or into the header.
    #[error("{0}")]
    Field(&'static str),
    /// A string is not valid in its encoding.
    #[error("{0}")]
    String(&'static str),
    /// The AV_PAIR list is not terminated or an entry overruns it.
    #[error("malformed NTLM target information")]
    TargetInfo,
}

impl Error {
    /// A static description, for [`Failure::Malformed`](super::super::Failure::Malformed).
    pub fn reason(self) -> &'static str {
        match self {
            Error::TooLong => "NTLM message too long",
            Error::Truncated => "NTLM message truncated",
            Error::Signature => "not an NTLM message (bad signature)",
            Error::WrongType(why) | Error::Field(why) | Error::String(why) => why,
            Error::TargetInfo => "malformed NTLM target information",
        }
    }
}

/// A NEGOTIATE message (MS-NLMP §2.2.1.1). The domain and workstation are raw OEM bytes, read
/// only when their SUPPLIED flag is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiate {
    /// The flags the client asks for.
    pub flags: u32,
    /// The client's domain (OEM), if supplied.
    pub domain: Vec<u8>,
    /// The client's workstation (OEM), if supplied.
    pub workstation: Vec<u8>,
}

/// A CHALLENGE message (MS-NLMP §2.2.1.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    /// The negotiated flags.
    pub flags: u32,
    /// The target name, encoded per `flags` (see [`encode_string`]).
    pub target_name: Vec<u8>,
    /// The 8-byte server challenge.
    pub server_challenge: [u8; 8],
    /// The AV_PAIR list (see [`target_info`]).
    pub target_info: Vec<u8>,
    /// The version field (meaningful only with [`flags::VERSION`]; zeros otherwise).
    pub version: [u8; 8],
}

/// An AUTHENTICATE message (MS-NLMP §2.2.1.3). Strings are raw, encoded per the negotiated
/// flags; decode them with [`decode_string`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authenticate {
    /// LmChallengeResponse.
    pub lm_response: Vec<u8>,
    /// NtChallengeResponse.
    pub nt_response: Vec<u8>,
    /// DomainName.
    pub domain: Vec<u8>,
    /// UserName.
    pub user: Vec<u8>,
    /// Workstation.
    pub workstation: Vec<u8>,
    /// EncryptedRandomSessionKey (not used by this server).
    pub session_key: Vec<u8>,
    /// NegotiateFlags, if the message carries them (older clients stop after the workstation
    /// field).
    pub flags: Option<u32>,
}

fn u16_at(msg: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([msg[at], msg[at + 1]])
}

fn u32_at(msg: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]])
}

/// Checks length, signature and type, and that the message holds `header` bytes.
fn check_header(msg: &[u8], kind: u32, header: usize, wrong: &'static str) -> Result<(), Error> {
    if msg.len() > MAX_TOKEN_LEN {
        return Err(Error::TooLong);
    }
    if msg.len() < 12 {
        return Err(Error::Truncated);
    }
    if &msg[..8] != SIGNATURE {
        return Err(Error::Signature);
    }
    if u32_at(msg, 8) != kind {
        return Err(Error::WrongType(wrong));
    }
    if msg.len() < header {
        return Err(Error::Truncated);
    }
    Ok(())
}

/// The (length, offset) of the security buffer at `at` (MS-NLMP §2.2.2.x "Fields": Len,
/// MaxLen, BufferOffset; MaxLen is ignored).
fn field_at(msg: &[u8], at: usize) -> (usize, usize) {
    (usize::from(u16_at(msg, at)), u32_at(msg, at + 4) as usize)
}

/// The bytes the security buffer at `at` points to; a non-empty field must lie within the
/// message and after the first `header` bytes.
fn payload(msg: &[u8], at: usize, header: usize, what: &'static str) -> Result<Vec<u8>, Error> {
    let (len, offset) = field_at(msg, at);
    if len == 0 {
        return Ok(Vec::new());
    }
    let end = offset.checked_add(len).ok_or(Error::Field(what))?;
    if offset < header || end > msg.len() {
        return Err(Error::Field(what));
    }
    Ok(msg[offset..end].to_vec())
}

impl Negotiate {
    /// Parses a NEGOTIATE message. A 16-byte message (signature, type, flags) is accepted when
    /// it announces no domain or workstation: old clients send no such fields.
    pub fn parse(msg: &[u8]) -> Result<Negotiate, Error> {
        check_header(msg, NEGOTIATE, 16, "expected an NTLM NEGOTIATE message")?;
        let flags = u32_at(msg, 12);
        let mut out = Negotiate {
            flags,
            ..Negotiate::default()
        };
        let supplied = |flag| flags & flag != 0;
        let any = flags::OEM_DOMAIN_SUPPLIED | flags::OEM_WORKSTATION_SUPPLIED;
        if supplied(any) && msg.len() < NEGOTIATE_HEADER {
            return Err(Error::Truncated);
        }
        if supplied(flags::OEM_DOMAIN_SUPPLIED) {
            out.domain = payload(msg, 16, 16, "NTLM NEGOTIATE domain field out of bounds")?;
        }
        if supplied(flags::OEM_WORKSTATION_SUPPLIED) {
            out.workstation = payload(
                msg,
                24,
                16,
                "NTLM NEGOTIATE workstation field out of bounds",
            )?;
        }
        Ok(out)
    }

    /// Encodes the message (for clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(NEGOTIATE, NEGOTIATE_HEADER);
        w.u32(self.flags);
        w.field(&self.domain);
        w.field(&self.workstation);
        w.finish()
    }
}

impl Challenge {
    /// Encodes the message; the payload (target name, then target information) follows the
    /// 56-byte header.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(CHALLENGE, CHALLENGE_HEADER);
        w.field(&self.target_name);
        w.u32(self.flags);
        w.bytes(&self.server_challenge);
        w.bytes(&[0; 8]);
        w.field(&self.target_info);
        w.bytes(&self.version);
        w.finish()
    }

    /// Parses a CHALLENGE message (for clients and tests).
    pub fn parse(msg: &[u8]) -> Result<Challenge, Error> {
        check_header(msg, CHALLENGE, 48, "expected an NTLM CHALLENGE message")?;
        let mut server_challenge = [0u8; 8];
        server_challenge.copy_from_slice(&msg[24..32]);
        let mut version = [0u8; 8];
        if msg.len() >= CHALLENGE_HEADER {
            version.copy_from_slice(&msg[48..56]);
        }
        Ok(Challenge {
            flags: u32_at(msg, 20),
            target_name: payload(msg, 12, 48, "NTLM CHALLENGE target name out of bounds")?,
            server_challenge,
            target_info: payload(msg, 40, 48, "NTLM CHALLENGE target info out of bounds")?,
            version,
        })
    }
}

impl Authenticate {
    /// Parses an AUTHENTICATE message. The session key and flags are read only when the message
    /// is long enough and no payload field starts inside them.
    pub fn parse(msg: &[u8]) -> Result<Authenticate, Error> {
        check_header(
            msg,
            AUTHENTICATE,
            AUTHENTICATE_MIN_HEADER,
            "expected an NTLM AUTHENTICATE message",
        )?;
        let h = AUTHENTICATE_MIN_HEADER;
        let mut out = Authenticate {
            lm_response: payload(msg, 12, h, "NTLM LM response field out of bounds")?,
            nt_response: payload(msg, 20, h, "NTLM NT response field out of bounds")?,
            domain: payload(msg, 28, h, "NTLM domain field out of bounds")?,
            user: payload(msg, 36, h, "NTLM user field out of bounds")?,
            workstation: payload(msg, 44, h, "NTLM workstation field out of bounds")?,
            ..Authenticate::default()
        };
        let long_header = msg.len() >= AUTHENTICATE_HEADER
            && [12, 20, 28, 36, 44].iter().all(|&at| {
                let (len, offset) = field_at(msg, at);
                len == 0 || offset >= AUTHENTICATE_HEADER
            });
        if long_header {
            out.session_key = payload(msg, 52, h, "NTLM session key field out of bounds")?;
            out.flags = Some(u32_at(msg, 60));
        }
        Ok(out)
    }

    /// Encodes the message with a 64-byte header (for clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(AUTHENTICATE, AUTHENTICATE_HEADER);
        w.field(&self.lm_response);
        w.field(&self.nt_response);
        w.field(&self.domain);
        w.field(&self.user);
        w.field(&self.workstation);
        w.field(&self.session_key);
        w.u32(self.flags.unwrap_or(0));
        w.finish()
    }
}

/// Builds a message: the header is written in order, payloads are appended after it.
struct Writer {
    header: Vec<u8>,
    payload: Vec<u8>,
    header_len: usize,
}

impl Writer {
    fn new(kind: u32, header_len: usize) -> Writer {
        let mut header = Vec::with_capacity(header_len);
        header.extend_from_slice(SIGNATURE);
        header.extend_from_slice(&kind.to_le_bytes());
        Writer {
            header,
            payload: Vec::new(),
            header_len,
        }
    }

    fn u32(&mut self, v: u32) {
        self.header.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.header.extend_from_slice(b);
    }

    /// A security buffer; its bytes go to the payload. Lengths are cut to 16 bits (callers
    /// write short strings and responses).
    fn field(&mut self, data: &[u8]) {
        let data = &data[..data.len().min(usize::from(u16::MAX))];
        let len = data.len() as u16;
        let offset = (self.header_len + self.payload.len()) as u32;
        self.header.extend_from_slice(&len.to_le_bytes());
        self.header.extend_from_slice(&len.to_le_bytes());
        self.header.extend_from_slice(&offset.to_le_bytes());
        self.payload.extend_from_slice(data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.header.resize(self.header_len, 0);
        self.header.extend_from_slice(&self.payload);
        self.header
    }
}

/// Encodes `s` for the wire: UTF-16LE if `unicode`, else the OEM form, which this server
/// writes as UTF-8 (only ASCII names are written in practice).
pub fn encode_string(s: &str, unicode: bool) -> Vec<u8> {
    if unicode {
        super::crypto::utf16le(s)
    } else {
        s.as_bytes().to_vec()
    }
}

/// Decodes a string field: UTF-16LE if `unicode` (odd lengths and unpaired surrogates are
/// errors); otherwise OEM, read as UTF-8 when it is valid UTF-8 (what non-Windows clients
/// send) and as Latin-1 otherwise (the OEM code page is not known to the server).
pub fn decode_string(bytes: &[u8], unicode: bool) -> Result<String, Error> {
    if unicode {
        if !bytes.len().is_multiple_of(2) {
            return Err(Error::String("NTLM Unicode string has an odd length"));
        }
        let units = bytes
            .chunks_exact(2)
            .map(|u| u16::from_le_bytes([u[0], u[1]]));
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| Error::String("NTLM Unicode string is not valid UTF-16"))
    } else {
        Ok(match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
        })
    }
}

/// Encodes an AV_PAIR list (MS-NLMP §2.2.2.1) and its MsvAvEOL terminator.
pub fn target_info(pairs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, value) in pairs {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&[0; 4]);
    out
}

/// Parses an AV_PAIR list up to its MsvAvEOL; the terminator is required.
pub fn parse_target_info(bytes: &[u8]) -> Result<Vec<(u16, &[u8])>, Error> {
    let mut pairs = Vec::new();
    let mut rest = bytes;
    loop {
        let (head, tail) = rest.split_at_checked(4).ok_or(Error::TargetInfo)?;
        let id = u16_at(head, 0);
        let len = usize::from(u16_at(head, 2));
        if id == av::EOL {
            return Ok(pairs);
        }
        let (value, tail) = tail.split_at_checked(len).ok_or(Error::TargetInfo)?;
        pairs.push((id, value));
        rest = tail;
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
pub(super) mod tests;
