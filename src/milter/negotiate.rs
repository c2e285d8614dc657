//! Option negotiation: which protocol version, actions, steps and macros we ask the MTA for.
//!
//! We ask only for what the enabled checks use: no unknown commands, no body when nothing reads
//! it, and the "no reply" promise for every step where no check can answer, which saves the MTA a
//! round trip per event. The macro lists name exactly the macros we read.

use super::codec::{action, proto, stage, Command, Response};

/// The highest protocol version we speak.
pub const VERSION: u32 = 6;
/// The lowest MTA version we serve (libmilter's minimum too).
pub const MIN_VERSION: u32 = 2;

/// What the enabled checks need from the MTA, decided per session from its config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Some check reads body chunks (also the `b=` byte count of #720).
    pub body: bool,
    /// Some check may answer at these steps.
    pub reply_connect: bool,
    pub reply_helo: bool,
    pub reply_mail: bool,
    pub reply_rcpt: bool,
    pub reply_data: bool,
    /// Some check needs the DATA step itself (greylisting).
    pub data: bool,
}

/// The steps that can get a reply, in protocol order, with the names `reply_steps` prints and
/// `with_reply_steps` reads. EOM always gets one.
const REPLY_STEPS: [&str; 6] = ["connect", "helo", "mail", "rcpt", "data", "eom"];

impl Needs {
    /// The steps that get a reply, as a comma list (`connect,mail,data,eom`): the MTA waits for
    /// an answer at each of them, so the list is what a config costs in round trips. EOM always
    /// gets one. `with_reply_steps` reads it back, so a null milter can be told to hold the same
    /// conversation.
    pub fn reply_steps(&self) -> String {
        let on = [self.reply_connect, self.reply_helo, self.reply_mail, self.reply_rcpt, self.reply_data, true];
        REPLY_STEPS.iter().zip(on).filter(|(_, on)| *on).map(|(name, _)| *name).collect::<Vec<_>>().join(",")
    }

    /// These needs with replies at exactly the steps of a `reply_steps` list ("all": every step);
    /// other fields are kept. An unknown step name is an error naming it.
    pub fn with_reply_steps(self, text: &str) -> Result<Needs, String> {
        let all = text.trim() == "all";
        let named: Vec<&str> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if let Some(bad) = named.iter().find(|s| !all && !REPLY_STEPS.contains(s)) {
            return Err(format!("unknown step {bad:?} (all, or a list of {})", REPLY_STEPS.join(", ")));
        }
        let has = |step: &str| all || named.contains(&step);
        Ok(Needs {
            reply_connect: has("connect"),
            reply_helo: has("helo"),
            reply_mail: has("mail"),
            reply_rcpt: has("rcpt"),
            reply_data: has("data"),
            ..self
        })
    }
}

/// The outcome of negotiation, kept for the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
    pub mta_version: u32,
    pub mta_actions: u32,
    pub mta_protocol: u32,
}

/// Macros we read, per stage.
pub const MACROS: &[(u32, &str)] = &[
    (stage::CONNECT, "j _ {daemon_name} {client_ptr} {client_resolve}"),
    (stage::HELO, "{tls_version}"),
    (stage::ENVFROM, "i {auth_type} {auth_authen} {mail_addr}"),
    (stage::ENVRCPT, "i {rcpt_addr}"),
    (stage::DATA, "i"),
    (stage::EOH, "i"),
    (stage::EOM, "i {msg_id}"),
];

/// Answers an MTA's option negotiation, or says why we cannot serve it.
pub fn negotiate(version: u32, actions: u32, protocol: u32, needs: Needs) -> Result<(Response, Negotiated), String> {
    if version < MIN_VERSION {
        return Err(format!("version {version}"));
    }
    let ours = version.min(VERSION);
    let mut want_actions = action::ADDHDRS | action::CHGHDRS;
    if ours >= 6 {
        want_actions |= action::SETSYMLIST;
    }
    let want_actions = want_actions & actions;

    let mut want = proto::NOUNKNOWN | proto::NR_HDR | proto::NR_EOH | proto::NR_UNKN;
    if !needs.body {
        want |= proto::NOBODY;
    } else {
        want |= proto::NR_BODY;
    }
    if !needs.data && !needs.reply_data {
        want |= proto::NODATA;
    }
    if !needs.reply_connect {
        want |= proto::NR_CONN;
    }
    if !needs.reply_helo {
        want |= proto::NR_HELO;
    }
    if !needs.reply_mail {
        want |= proto::NR_MAIL;
    }
    if !needs.reply_rcpt {
        want |= proto::NR_RCPT;
    }
    if !needs.reply_data {
        want |= proto::NR_DATA;
    }
    // Only what the MTA offered; an MTA drops a milter that asks for more.
    let want = want & protocol;
    let macros = if want_actions & action::SETSYMLIST != 0 {
        MACROS.iter().map(|(s, l)| (*s, l.to_string())).collect()
    } else {
        Vec::new()
    };
    let n = Negotiated {
        version: ours,
        actions: want_actions,
        protocol: want,
        mta_version: version,
        mta_actions: actions,
        mta_protocol: protocol,
    };
    Ok((Response::OptNeg { version: ours, actions: want_actions, protocol: want, macros }, n))
}

impl Negotiated {
    /// Whether we promised not to answer this command.
    pub fn no_reply(&self, cmd: &Command) -> bool {
        cmd.no_reply_flag().is_some_and(|flag| self.protocol & flag != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTFIX_ACTIONS: u32 = 0x1ff;
    const POSTFIX_PROTOCOL: u32 = 0x1fffff;

    #[test]
    fn reply_steps_read_back_as_printed() {
        let base = Needs { body: true, data: true, ..Needs::default() };
        let all = base.with_reply_steps("all").unwrap();
        assert_eq!(all.reply_steps(), "connect,helo,mail,rcpt,data,eom");
        let some = base.with_reply_steps(" mail, data ,eom").unwrap();
        assert_eq!(some.reply_steps(), "mail,data,eom");
        assert!(some.body && some.data && !some.reply_connect && !some.reply_rcpt);
        assert_eq!(some.with_reply_steps(&some.reply_steps()), Ok(some));
        assert_eq!(base.with_reply_steps("eom").unwrap().reply_steps(), "eom");
        assert_eq!(base.with_reply_steps("").unwrap(), base);
        let err = base.with_reply_steps("mail,quit").unwrap_err();
        assert!(err.contains("\"quit\"") && err.contains("connect, helo"), "{err}");
    }

    #[test]
    fn version_6_gets_no_reply_flags_and_macros() {
        let (resp, n) = negotiate(6, POSTFIX_ACTIONS, POSTFIX_PROTOCOL, Needs { body: true, ..Needs::default() }).unwrap();
        assert_eq!(n.version, 6);
        assert_eq!(n.actions, action::ADDHDRS | action::CHGHDRS | action::SETSYMLIST);
        assert_ne!(n.protocol & proto::NR_CONN, 0);
        assert_ne!(n.protocol & proto::NOUNKNOWN, 0);
        assert_eq!(n.protocol & proto::NOBODY, 0);
        assert_ne!(n.protocol & proto::NR_BODY, 0);
        assert_eq!(n.protocol & proto::NOHDRS, 0, "headers are read for Message-ID");
        match resp {
            Response::OptNeg { macros, .. } => assert!(macros.iter().any(|(s, l)| *s == stage::EOM && l.contains('i'))),
            other => panic!("{other:?}"),
        }
        assert!(n.no_reply(&Command::Connect {
            hostname: String::new(),
            family: super::super::codec::Family::Unknown,
            port: 0,
            address: String::new()
        }));
        assert!(!n.no_reply(&Command::EndOfMessage(Vec::new())));
    }

    #[test]
    fn checks_that_answer_keep_replies() {
        let needs = Needs {
            body: true,
            reply_connect: true,
            reply_mail: true,
            reply_rcpt: true,
            reply_data: true,
            data: true,
            reply_helo: true,
        };
        let (_, n) = negotiate(6, POSTFIX_ACTIONS, POSTFIX_PROTOCOL, needs).unwrap();
        for flag in [proto::NR_CONN, proto::NR_HELO, proto::NR_MAIL, proto::NR_RCPT, proto::NR_DATA, proto::NODATA, proto::NOBODY]
        {
            assert_eq!(n.protocol & flag, 0, "flag 0x{flag:x}");
        }
    }

    #[test]
    fn older_mtas_get_only_what_they_offer() {
        let (resp, n) = negotiate(2, 0x3f, 0x7f, Needs::default()).unwrap();
        assert_eq!(n.version, 2);
        assert_eq!(n.protocol & !0x7f, 0);
        assert_eq!(n.actions & action::SETSYMLIST, 0);
        assert!(matches!(resp, Response::OptNeg { ref macros, .. } if macros.is_empty()));
        assert!(negotiate(1, 0x0f, 0x3f, Needs::default()).is_err());
        let (_, n) = negotiate(9, POSTFIX_ACTIONS, POSTFIX_PROTOCOL, Needs::default()).unwrap();
        assert_eq!(n.version, 6, "never answer a higher version than ours");
    }
}
