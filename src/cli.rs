//! Commands: argument parsing (clap), and the mapping of every failure to a sysexits code.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use thiserror::Error;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::{Config, ConfigError};
use crate::daemon::{self, DaemonError, Mode, Summary};
use crate::deliver::smtp::{SmtpError, SmtpRoute};
use crate::keyring::{self, KeyringError};
use crate::seal::{self, Protection, SealError};
use crate::smime::SignatureMode;
use crate::smime::certs::unix_now;

/// S/MIME sign and encrypt messages for an MTA's pickup directory.
#[derive(Debug, Parser)]
#[command(name = "smime-pickup", version, about)]
pub struct Cli {
    /// Configuration file (default: $SMIME_PICKUP_CONFIG, else /etc/smime-pickup/smime-pickup.toml)
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Seal one message and write it to stdout (no envelope lines, CRLF)
    Seal(SealArgs),
    /// Seal the bundled fixture corpus with the bundled test PKI (no setup needed)
    Demo(DemoArgs),
    /// Seal one message and send it by SMTP (SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASSWORD or [smtp])
    Send(SendArgs),
    /// Verify the configuration, folders, keys, certificates (and with --smtp the SMTP server)
    Check {
        /// Also connect to the SMTP server: STARTTLS, certificate, AUTH, QUIT
        #[arg(long)]
        smtp: bool,
    },
    /// The daemon, in the foreground: watch the spool, seal, write into pickup (systemd runs this)
    Run,
    /// Process everything in the spool now, then exit (0 all delivered, 65 some failed, 75 some deferred)
    Once,
    /// The failed folder: list what failed and why, put inputs back into the spool, purge old ones
    Failed(crate::failed::FailedArgs),
    /// Recipients' certificates: import them from signed replies, list the certs folder
    Certs(crate::harvest::command::CertsArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The fixtures folder (holds pki/ and eml/)
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
    pub fixtures: PathBuf,
    /// Where results go (sealed/, failed/); replaced if it holds a previous demo
    #[arg(long, value_name = "DIR", default_value = "demo-out")]
    pub out: PathBuf,
}

/// What `seal` and `send` do to the message.
#[derive(Debug, Args)]
pub struct SealFlags {
    /// Sign (with neither --sign nor --encrypt: the [seal] defaults, normally both)
    #[arg(long)]
    pub sign: bool,
    /// Encrypt for every recipient
    #[arg(long)]
    pub encrypt: bool,
    /// Opaque signature (application/pkcs7-mime) instead of multipart/signed
    #[arg(long)]
    pub opaque: bool,
}

impl SealFlags {
    /// Applies the flags over the `[seal]` section: naming --sign or --encrypt means exactly those.
    fn apply(&self, config: &mut Config) {
        if self.sign || self.encrypt {
            config.seal.sign = self.sign;
            config.seal.encrypt = self.encrypt;
        }
        if self.opaque {
            config.seal.signature = SignatureMode::Opaque;
        }
    }
}

#[derive(Debug, Args)]
pub struct SealArgs {
    #[command(flatten)]
    pub how: SealFlags,
    /// Sender keys folder (overrides the config)
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Recipient certificates folder (overrides the config)
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// Trusted CA bundle, PEM (overrides the config)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Also write every sealed copy (Bcc recipients get their own) into DIR as N.eml, with its
    /// envelope (x-sender, x-receiver lines) in N.env
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// The message file, or - for stdin
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub how: SealFlags,
    /// Accepted for the sparkpostSMIME tool's scripts: sending is always by SMTP here
    #[arg(long = "send_smtp", hide = true)]
    pub send_smtp: bool,
    /// The sparkpostSMIME tool's spelling of a detached signature (--sign)
    #[arg(long = "sign_detached", hide = true)]
    pub sign_detached: bool,
    /// The message file
    pub file: PathBuf,
}

/// A command's failure, with the exit code it maps to.
#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("{path}: {source}")]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Seal { path: PathBuf, source: SealError },
    #[error("{path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// `check` found problems (the report is already printed)
    #[error("check found problems")]
    Check(u8),
    #[error("no SMTP server: set SMTP_HOST, or host in the [smtp] section of the config")]
    NoSmtpHost,
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    #[error("the server refused the message for {0}")]
    Refused(String),
    #[error(transparent)]
    Failed(#[from] crate::failed::FailedError),
    #[error(transparent)]
    Harvest(#[from] crate::harvest::SetupError),
    /// `certs import` refused some inputs (each is already printed)
    #[error("some replies gave no certificate")]
    Refused65,
    /// `once` finished with inputs failed or deferred (the summary is already printed)
    #[error("not everything was delivered: {0}")]
    Outcome(Summary),
}

impl CliError {
    /// sysexits(3): 65 data, 66 no input, 74 I/O, 78 configuration.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Keyring(_) => 78,
            CliError::Input { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 66,
            CliError::Input { .. } | CliError::Output { .. } => 74,
            CliError::Seal { .. } => 65,
            CliError::Daemon(DaemonError::Config(_) | DaemonError::Keyring(_)) => 78,
            CliError::Daemon(DaemonError::Folder { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                66
            }
            CliError::Daemon(DaemonError::Folder { .. }) => 74,
            CliError::NoSmtpHost => 78,
            CliError::Check(code) => *code,
            CliError::Smtp(e) if e.is_permanent() => 65,
            CliError::Smtp(_) => 69,
            CliError::Refused(_) => 65,
            CliError::Harvest(crate::harvest::SetupError::CertsFolder(..)) => 66,
            CliError::Harvest(_) => 78,
            CliError::Refused65 => 65,
            CliError::Failed(crate::failed::FailedError::NotConfigured) => 78,
            CliError::Failed(crate::failed::FailedError::Unknown(_)) => 66,
            CliError::Failed(crate::failed::FailedError::NothingChosen) => 64,
            CliError::Failed(crate::failed::FailedError::Io { .. }) => 74,
            // not finished: temporary, whatever was refused meanwhile (the summary says both)
            CliError::Outcome(s) if s.interrupted => 75,
            CliError::Outcome(s) if s.failed > 0 => 65,
            CliError::Outcome(_) => 75,
        }
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Seal(args) => seal_command(cli.config.as_deref(), args),
        Command::Send(args) => send_command(cli.config.as_deref(), args),
        Command::Check { smtp } => {
            let config = Config::locate(cli.config.as_deref())?;
            let report = crate::check::check(&config, smtp);
            print!("{}", report.render());
            match report.exit_code() {
                0 => Ok(()),
                code => Err(CliError::Check(code)),
            }
        }
        Command::Run => {
            let config = Config::locate(cli.config.as_deref())?;
            let (shutdown, reload) = signal_flags()?;
            let summary = daemon::run(config, Mode::Run, shutdown, reload)?;
            log::info!("stopped: {summary}");
            Ok(())
        }
        Command::Once => {
            let config = Config::locate(cli.config.as_deref())?;
            let (shutdown, reload) = signal_flags()?;
            let summary = daemon::run(config, Mode::Once, shutdown, reload)?;
            println!("{summary}");
            if summary.failed > 0 || summary.deferred > 0 || summary.interrupted {
                Err(CliError::Outcome(summary))
            } else {
                Ok(())
            }
        }
        Command::Failed(args) => {
            let config = Config::locate(cli.config.as_deref())?;
            print!("{}", crate::failed::run(&config, args)?);
            Ok(())
        }
        Command::Certs(args) => {
            let config = Config::locate(cli.config.as_deref())?;
            let mut stdout = std::io::stdout().lock();
            match crate::harvest::command::run(&config, args, &mut stdout)? {
                crate::harvest::command::Outcome::AllImported => Ok(()),
                crate::harvest::command::Outcome::SomeRefused => Err(CliError::Refused65),
            }
        }
        Command::Demo(args) => {
            let summary = crate::demo::run(&args.fixtures, &args.out)?;
            let out = args.out.display();
            let pki = args.fixtures.join("pki");
            let pki = pki.display();
            let sample = crate::demo::find_pickup_file(&args.out.join("pickup"), "plain-text")
                .map_or_else(|| format!("{out}/pickup/FILE"), |p| p.display().to_string());
            let text = format!(
                "\ndemo: {summary}\n\
                 pickup files (envelope lines + sealed message): {out}/pickup/\n\
                 refused inputs, each with NAME.reason:          {out}/failed/\n\
                 open one as its recipient:\n  \
                 openssl cms -decrypt -in {sample} -recip {pki}/private/bob@example.com.crt \\\n    \
                 -inkey {pki}/private/bob@example.com.key | openssl cms -verify -CAfile {pki}/ca.pem\n"
            );
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|source| CliError::Output {
                    path: "(stdout)".into(),
                    source,
                })?;
            Ok(())
        }
    }
}

fn seal_command(config_path: Option<&Path>, args: SealArgs) -> Result<(), CliError> {
    let mut config = Config::locate(config_path)?;
    if let Some(k) = args.keys {
        config.keys = k;
    }
    if let Some(c) = args.certs {
        config.certs = c;
    }
    if let Some(ca) = args.ca {
        config.ca = Some(ca);
    }
    args.how.apply(&mut config);
    let input_name = if args.file == Path::new("-") {
        PathBuf::from("(stdin)")
    } else {
        args.file.clone()
    };
    let sealed = seal_file(&config, &args.file, &input_name)?;

    if let Some(dir) = &args.output_dir {
        write_copies(dir, &sealed).map_err(|source| CliError::Output {
            path: dir.clone(),
            source,
        })?;
    } else if sealed.len() > 1 {
        eprintln!(
            "note: {} separate copies were made (hidden recipients get their own); stdout has the first, \
             --output-dir DIR writes them all",
            sealed.len()
        );
    }
    for copy in &sealed {
        if copy.protection == Protection::Signed && config.seal.encrypt {
            eprintln!(
                "warning: {} receive(s) a signed, unencrypted copy",
                copy.envelope.recipients.join(", ")
            );
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&sealed[0].data)
        .and_then(|()| stdout.flush())
        .map_err(|source| CliError::Output {
            path: "(stdout)".into(),
            source,
        })
}

/// `send`: seal one message and inject it over SMTP, printing what the sparkpostSMIME tool printed.
fn send_command(config_path: Option<&Path>, mut args: SendArgs) -> Result<(), CliError> {
    let mut config = Config::locate(config_path)?;
    if config.smtp.host.is_empty() {
        return Err(CliError::NoSmtpHost);
    }
    if args.sign_detached {
        args.how.sign = true;
    }
    args.how.apply(&mut config);
    let sealed = seal_file(&config, &args.file, &args.file)?;
    let route = SmtpRoute::new(config.smtp.clone()).map_err(|why| {
        CliError::Config(ConfigError::Invalid {
            path: config.source.clone().unwrap_or_default(),
            why,
        })
    })?;
    if !config.smtp.tls_verify {
        eprintln!("warning: [smtp] tls_verify = false: the server's certificate is not checked");
    }
    let mut conn = route.open()?;
    let s = &config.smtp;
    println!(
        "Opened SMTP connection ({}) to {}, port {}, user=\"{}\", password=\"{}\"",
        conn.security,
        s.host,
        s.port,
        s.user.as_deref().unwrap_or(""),
        if s.password.is_some() { "********" } else { "" }
    );
    let mut refused = Vec::new();
    // one line pair a transaction (a copy to over a hundred recipients takes several)
    for copy in &sealed {
        for recipients in crate::deliver::smtp::transactions(copy) {
            println!(
                "Sending {} From: {} To: {}",
                args.file.display(),
                copy.envelope.sender,
                recipients.join(", ")
            );
            let (outcome, took) =
                route.send_on(&mut conn, &copy.envelope.sender, recipients, &copy.data)?;
            for (r, why) in &outcome.rejected {
                println!("Refused {r}: {why}");
                refused.push(r.clone());
            }
            if !outcome.accepted.is_empty() {
                println!("OK - in {:.3} seconds", took.as_secs_f64());
            }
        }
    }
    conn.quit();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(CliError::Refused(refused.join(", ")))
    }
}

/// SIGTERM and SIGINT set the shutdown flag, SIGHUP the reload flag; nothing else happens in the
/// handlers.
fn signal_flags() -> Result<(Arc<AtomicBool>, Arc<AtomicBool>), CliError> {
    let (shutdown, reload) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let register = |sig, flag: &Arc<AtomicBool>| {
        signal_hook::flag::register(sig, flag.clone())
            .map(|_| ())
            .map_err(|source| CliError::Input {
                path: "(signal handlers)".into(),
                source,
            })
    };
    register(signal_hook::consts::SIGTERM, &shutdown)?;
    register(signal_hook::consts::SIGINT, &shutdown)?;
    register(signal_hook::consts::SIGHUP, &reload)?;
    Ok((shutdown, reload))
}

/// Reads `file` (`-`: stdin) and seals it with `config`; errors name the input as `shown`.
fn seal_file(config: &Config, file: &Path, shown: &Path) -> Result<Vec<seal::Sealed>, CliError> {
    let input = read_input(file).map_err(|source| CliError::Input {
        path: shown.to_path_buf(),
        source,
    })?;
    let keyring = keyring::load(config)?;
    seal::seal(
        &input,
        &config.seal,
        config.max_message_bytes,
        &keyring,
        unix_now(),
    )
    .map_err(|source| CliError::Seal {
        path: shown.to_path_buf(),
        source,
    })
}

fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().lock().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path)
    }
}

fn write_copies(dir: &Path, sealed: &[seal::Sealed]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (i, copy) in sealed.iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.eml")), &copy.data)?;
        let mut env = format!("x-sender: {}\n", copy.envelope.sender);
        for r in &copy.envelope.recipients {
            env.push_str(&format!("x-receiver: {r}\n"));
        }
        std::fs::write(dir.join(format!("{i}.env")), env)?;
    }
    Ok(())
}
