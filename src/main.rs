//! The `smtpf-milter` command: run the daemon, check a config, explain a log message.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use smtpf_milter::config::{Config, DEFAULT_CONFIG_FILE, KEYS};
use smtpf_milter::log::{catalog, format_line, Logger};
use smtpf_milter::reply::catalog as reply_catalog;
use smtpf_milter::store::StoreSpec;

/// mimalloc instead of glibc's malloc: a session allocates and frees many small buffers per
/// milter event from several threads, and glibc's allocator was over a tenth of the daemon's
/// CPU under load (docs/performance.md). Built with `no_thp`: transparent huge pages made its
/// arenas resident at start (16 MiB more RSS for nothing).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "smtpf-milter", version, about = "smtpf's SMTP checks as a milter for Postfix and Sendmail")]
struct Cli {
    /// Config file (TOML, smtpf option names). Default: /etc/smtpf-milter/smtpf-milter.toml if it
    /// exists, else the embedded defaults.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the milter in the foreground (the default).
    Run,
    /// Validate the config file; exit 0 when valid, 1 with the key and line otherwise.
    CheckConfig,
    /// Explain a number: a log line's level, format and meaning (`explain 387`), or a reply's
    /// code, text and meaning as a sender quotes it from a bounce (`explain 552`).
    Explain {
        /// The number, with or without '#'; without it, every log message and reply.
        number: Option<String>,
        /// Print the whole log catalog as a Markdown table (with --replies: the reply catalog).
        #[arg(long)]
        markdown: bool,
        /// With --markdown: the reply catalog instead of the log catalog.
        #[arg(long, requires = "markdown")]
        replies: bool,
    },
    /// Inspect and release greylist records in the state store, SQLite or Redis (safe while the
    /// daemon runs).
    Grey {
        #[command(subcommand)]
        action: GreyCmd,
    },
    /// Convert smtpf's smtpf.cf: smtpf-milter TOML on stdout, and on stderr one line per option
    /// (converted, no meaning in a milter and why, not supported yet) and per malformed line.
    ImportSmtpf {
        /// smtpf's option file, e.g. /etc/smtpf/smtpf.cf.
        file: PathBuf,
    },
    /// List every config key with its default and meaning.
    Keys {
        /// Print a Markdown table.
        #[arg(long)]
        markdown: bool,
    },
    /// Summarise our log: sessions, refusals by reply number and list, greylisting (first
    /// sights, passes, never retried, the delay senders saw), duplicates, DNS failures, store
    /// errors. Reads syslog or `journalctl -o short-iso` output, plain or gzip.
    Report {
        /// Log files (default: standard input); other programs' lines are skipped.
        files: Vec<String>,
        /// Postfix's log, to compare our refusals with the clients that disconnected without
        /// sending a message (per client address), and to join the queue ids.
        #[arg(long, value_name = "FILE")]
        postfix: Vec<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash: /usr/share/bash-completion/completions/smtpf-milter,
    /// zsh: a file _smtpf-milter in a directory of $fpath).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages smtpf-milter.8, smtpf-milter.toml.5 and smtpf-milter-messages.7
    /// into DIR (for packaging).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
}

#[derive(Subcommand)]
enum GreyCmd {
    /// List records: state, age, time to expiry, key.
    List {
        /// Only tuples still being temp-failed.
        #[arg(long, conflicts_with = "passed")]
        pending: bool,
        /// Only passed tuples and hosts.
        #[arg(long)]
        passed: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// At most this many records.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        /// Only keys containing this text (an IP, a domain, an address).
        filter: Option<String>,
    },
    /// Mark a tuple or host passed (e.g. `grey allow 192.0.2.1,alice@example.org,bob@example.net`).
    Allow { key: String },
    /// Forget a record.
    Delete { key: String },
    /// Counts by state.
    Stats,
}

fn load(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
            Config::load(Path::new(DEFAULT_CONFIG_FILE)).map_err(|e| e.to_string())
        }
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Explain { markdown: true, replies, .. } => {
            say(&if replies { reply_catalog::markdown_table() } else { catalog::markdown_table() });
            ExitCode::SUCCESS
        }
        Cmd::Explain { number: Some(number), .. } => explain(&number),
        Cmd::Explain { number: None, .. } => {
            let logs = catalog::ALL.iter().map(|m| format!("#{} {} {}\n", m.num, m.level.word(), m.format));
            let replies = reply_catalog::ALL.iter().map(|m| format!("#{} reply {} {} {}\n", m.num, m.code, m.ecode, m.format));
            let mut list: Vec<(u16, String)> = catalog::ALL.iter().map(|m| m.num).zip(logs).collect();
            list.extend(reply_catalog::ALL.iter().map(|m| m.num).zip(replies));
            list.sort_by_key(|(n, _)| *n);
            say(&list.into_iter().map(|(_, line)| line).collect::<String>());
            ExitCode::SUCCESS
        }
        Cmd::Keys { markdown: true } => {
            say(&smtpf_milter::config::markdown_table());
            ExitCode::SUCCESS
        }
        Cmd::Keys { markdown: false } => {
            let list: String = KEYS.iter().map(|k| format!("{} = {}\n    {}\n\n", k.name, k.default, k.meaning)).collect();
            say(&list);
            ExitCode::SUCCESS
        }
        Cmd::Grey { action } => grey(cli.config.as_deref(), action),
        Cmd::Report { files, postfix, json } => report(&files, &postfix, json),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "smtpf-milter", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Cmd::Manpages { dir } => match write_manpages(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("smtpf-milter: cannot write the manual pages into {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
        Cmd::ImportSmtpf { file } => import_smtpf(&file),
        Cmd::CheckConfig => match load(cli.config.as_deref()).and_then(|c| {
            // Also read the access-map and set up the resolver, as start-up and reload do.
            let shown = c.path.clone();
            smtpf_milter::policy::Policy::build(c).map_err(|e| match shown {
                Some(path) => format!("{}: {e}", path.display()),
                None => e.to_string(),
            })
        }) {
            Ok(policy) => {
                let c = &policy.config;
                for w in c.warnings() {
                    eprintln!("warning: {w}");
                }
                // The numbered lines the daemon logs at start: smtpf options it will not apply,
                // and access-map lines it will skip.
                for (msg, [key, why]) in c.smtpf_warnings() {
                    eprintln!("warning: {}", format_line(msg, None, &[&key, &why]));
                }
                for w in &policy.access_warnings {
                    eprintln!("warning: {}", format_line(&catalog::ACCESS_WARNING, None, &[w]));
                }
                for w in &policy.grey_whitelist_warnings {
                    eprintln!("warning: {}", format_line(&catalog::GREY_WHITELIST_SKIPPED, None, &[w]));
                }
                let shown = c.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded defaults".into());
                // The second line says what the enabled checks cost the MTA in round trips.
                say(&format!(
                    "{shown}: OK\nreplies: {} (an MTA speaking milter protocol 6 waits for an answer at these steps only)\n",
                    policy.milter_needs().reply_steps()
                ));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run => {
            // A panic's message can quote peer text (a slice of a HELO, say); the default hook
            // prints it raw, line breaks included. One escaped line instead; the session that
            // hit it is logged as #2041 and only its connection closes.
            std::panic::set_hook(Box::new(|info| {
                let what = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                eprintln!("{}", smtpf_milter::log::render("smtpf-milter: panic at %s: %s", &[&at, &what]));
            }));
            let config = match load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("smtpf-milter: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("smtpf-milter: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let log = Logger::new(&config.log_target, config.verbose.clone());
            let code = runtime.block_on(smtpf_milter::daemon::run(config, log.clone()));
            // Every line logged so far reaches its destination before the process exits.
            log.flush(std::time::Duration::from_secs(5));
            ExitCode::from(code as u8)
        }
    }
}

fn grey(config: Option<&Path>, action: GreyCmd) -> ExitCode {
    use smtpf_milter::admin;
    let config = match load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smtpf-milter: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spec = config.store_spec();
    let shown = spec.shown();
    if let StoreSpec::Sqlite { path, .. } = &spec {
        if !path.exists() {
            eprintln!("smtpf-milter: no state file at {shown} (cache-path)");
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smtpf-milter: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let store = smtpf_milter::store::Store::open(&spec, None).await?;
        let now = smtpf_milter::ids::unix_now();
        let out = match action {
            GreyCmd::List { pending, passed, json, limit, filter } => {
                let state = if pending {
                    admin::StateFilter::Pending
                } else if passed {
                    admin::StateFilter::Passed
                } else {
                    admin::StateFilter::All
                };
                admin::list(&store, now, state, filter.as_deref(), json, limit).await
            }
            GreyCmd::Allow { key } => admin::allow(&store, now, &key, config.cache_accept_ttl as i64).await,
            GreyCmd::Delete { key } => admin::delete(&store, &key).await,
            GreyCmd::Stats => admin::stats(&store, now).await,
        };
        store.close().await;
        out
    });
    match result {
        Ok(text) => {
            say(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtpf-milter: {shown}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import_smtpf(file: &Path) -> ExitCode {
    let shown = file.display().to_string();
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("smtpf-milter: {shown}: cannot read: {e}");
            return ExitCode::FAILURE;
        }
    };
    // smtpf reads bytes; a Latin-1 comment must not stop the conversion.
    match smtpf_milter::config::import::import(&String::from_utf8_lossy(&bytes), &shown) {
        Ok(out) => {
            say(&out.toml);
            let mut report: String = out.report.iter().map(|l| format!("{l}\n")).collect();
            report.push_str(&out.summary);
            report.push('\n');
            eprint!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtpf-milter: {shown}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `smtpf-milter report`. A file that cannot be read to its end is named with the line it
/// stopped at; the report still covers what was read, and the exit status is 1.
fn report(files: &[String], postfix: &[String], json: bool) -> ExitCode {
    use smtpf_milter::report::{LogFile, Reader, MAX_LINE};
    let mut reader = Reader::default();
    let mut complete = true;
    let stdin = ["-".to_string()];
    let ours = if files.is_empty() { &stdin[..] } else { files };
    let all = ours.iter().map(|f| (f, false)).chain(postfix.iter().map(|f| (f, true)));
    for (f, is_postfix) in all {
        let shown = if is_postfix { format!("--postfix {f}") } else { f.clone() };
        let mut log = match LogFile::open(f) {
            Ok(log) => log,
            Err(e) => {
                eprintln!("smtpf-milter report: {shown}: {e}");
                return ExitCode::FAILURE;
            }
        };
        for line in log.by_ref() {
            if is_postfix {
                reader.postfix_line(&line);
            } else {
                reader.line(&line);
            }
        }
        if log.long_lines > 0 {
            eprintln!("smtpf-milter report: {shown}: {} lines longer than {MAX_LINE} bytes skipped", log.long_lines);
        }
        if let Some(e) = &log.error {
            eprintln!(
                "smtpf-milter report: {shown}: read error after line {}: {e}; the report covers the lines before it",
                log.lines
            );
            complete = false;
        }
    }
    let r = reader.finish();
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        print!("{}", r.text());
    }
    if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The three manual pages: the command line (from its clap definition), the config file and the
/// numbered messages (from the tables the daemon reads).
fn write_manpages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let version = env!("CARGO_PKG_VERSION");
    let cmd = Cli::command().long_about(
        "smtpf-milter applies the checks of smtpf, SnertSoft's SMTP filtering proxy, to mail \
         received by Postfix or Sendmail over the milter protocol: access-map white and black \
         lists, DNS lists, sender MX verification, SPF, greylisting and duplicate-message \
         detection. It logs smtpf's numbered messages (smtpf-milter-messages(7)) and reads one \
         TOML file (smtpf-milter.toml(5)). Run without a command it serves the milter socket \
         in the foreground; SIGHUP reloads the configuration, SIGTERM stops it after open \
         sessions finish.",
    );
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    // Each command with its arguments, in this one page.
    let roff = smtpf_milter::manpages::roff;
    page.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let mut text = format!(".SS \"{}\"\n", roff(sub.get_name()));
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            text.push_str(&format!("{}\n", roff(&about.to_string())));
        }
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set() && a.get_id() != "help") {
            let values = arg.get_value_names().map(|v| v.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>().join(" "));
            let flag = match (arg.get_long(), arg.get_short()) {
                _ if arg.is_positional() => {
                    values.clone().unwrap_or_else(|| format!("<{}>", arg.get_id().as_str().to_uppercase()))
                }
                (Some(l), Some(c)) => format!("-{c}, --{l}"),
                (Some(l), None) => format!("--{l}"),
                (None, Some(c)) => format!("-{c}"),
                (None, None) => arg.get_id().to_string(),
            };
            let flag = match values {
                Some(v) if !arg.is_positional() && arg.get_action().takes_values() => format!("{flag} {v}"),
                _ => flag,
            };
            let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
            let choices: Vec<String> = arg.get_possible_values().iter().map(|v| v.get_name().to_string()).collect();
            let choices = if choices.is_empty() || !arg.get_action().takes_values() {
                String::new()
            } else {
                format!("{}One of: {}.", if help.is_empty() { "" } else { ". " }, choices.join(", "))
            };
            text.push_str(&format!(".TP\n.B {}\n{}{}\n", roff(&flag), roff(&help), roff(&choices)));
        }
        for grand in sub.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help") {
            let about = grand.get_about().map(|a| a.to_string()).unwrap_or_default();
            let args: Vec<String> = grand
                .get_arguments()
                .filter(|a| a.get_id() != "help")
                .map(|a| match a.get_long() {
                    Some(l) => format!("[--{l}]"),
                    None => format!("<{}>", a.get_id().as_str().to_uppercase()),
                })
                .collect();
            text.push_str(&format!(
                ".TP\n.B {} {} {}\n{}\n",
                roff(sub.get_name()),
                roff(grand.get_name()),
                roff(&args.join(" ")),
                roff(&about)
            ));
        }
        page.extend_from_slice(text.as_bytes());
    }
    man.render_version_section(&mut page)?;
    page.extend_from_slice(
        b".SH FILES\n.TP\n/etc/smtpf\\-milter/smtpf\\-milter.toml\nthe configuration\n\
          .SH SEE ALSO\n.BR smtpf\\-milter.toml (5),\n.BR smtpf\\-milter\\-messages (7),\n.BR postconf (5),\n.BR sendmail (8)\n",
    );
    std::fs::write(dir.join("smtpf-milter.8"), page)?;
    std::fs::write(dir.join("smtpf-milter.toml.5"), smtpf_milter::manpages::config_page(version))?;
    std::fs::write(dir.join("smtpf-milter-messages.7"), smtpf_milter::manpages::messages_page(version))?;
    Ok(())
}

fn explain(number: &str) -> ExitCode {
    let Ok(n) = number.trim().trim_start_matches('#').parse::<u16>() else {
        eprintln!("\"{number}\" is not a message number");
        return ExitCode::FAILURE;
    };
    if let Some(m) = catalog::find(n) {
        say(&format!("#{} {} {}\n\n{}\n", m.num, m.level.word(), m.format, m.meaning));
        return ExitCode::SUCCESS;
    }
    if let Some(m) = reply_catalog::find(n) {
        say(&format!("#{} reply {} {} {}\n\n{}\n", m.num, m.code, m.ecode, m.format, m.meaning));
        return ExitCode::SUCCESS;
    }
    eprintln!("#{n} is neither a log message nor a reply smtpf-milter writes (`smtpf-milter explain` lists them)");
    ExitCode::FAILURE
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
