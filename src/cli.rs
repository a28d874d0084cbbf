//! Commands: argument parsing (clap), and the mapping of every failure to a sysexits code.

mod send;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::daemon::{self, DaemonError, Mode, Summary};
use crate::deliver::api::ApiError;
use crate::deliver::smtp::SmtpError;
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
    /// Seal one message and send it by SMTP (SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASSWORD or [smtp]),
    /// or with --api through the HTTP Transmissions API ([api], SPARKPOST_API_KEY, SPARKPOST_HOST)
    Send(SendArgs),
    /// Verify the configuration, folders, keys, certificates (and with --smtp / --api the servers)
    Check {
        /// Also connect to the SMTP server: STARTTLS, certificate, AUTH, QUIT
        #[arg(long)]
        smtp: bool,
        /// Also ask the API server: URL, certificate and key (a malformed request it must refuse)
        #[arg(long)]
        api: bool,
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
    /// Where results go (spool/, pickup/, failed/ and the config); replaced if it holds a previous demo
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

/// Where `seal` and `send` find keys and certificates, over the config.
#[derive(Debug, Args)]
pub struct KeyFolders {
    /// Sender keys folder (overrides the config)
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Recipient certificates folder (overrides the config)
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// Trusted CA bundle, PEM (overrides the config)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl KeyFolders {
    pub(crate) fn apply(self, config: &mut Config) {
        if let Some(k) = self.keys {
            config.keys = k;
        }
        if let Some(c) = self.certs {
            config.certs = c;
        }
        if let Some(ca) = self.ca {
            config.ca = Some(ca);
        }
    }
}

#[derive(Debug, Args)]
pub struct SealArgs {
    #[command(flatten)]
    pub how: SealFlags,
    #[command(flatten)]
    pub folders: KeyFolders,
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
    #[command(flatten)]
    pub folders: KeyFolders,
    /// Send through the HTTP Transmissions API ([api]) instead of SMTP (also --send_api, the
    /// sparkpostSMIME tool's spelling)
    #[arg(long, alias = "send_api")]
    pub api: bool,
    /// Send by SMTP (the default; the sparkpostSMIME tool's spelling, accepted for its scripts)
    #[arg(long = "send_smtp", conflicts_with = "api")]
    pub send_smtp: bool,
    /// Sign with a detached signature, as --sign does (the sparkpostSMIME tool's spelling)
    #[arg(long = "sign_detached")]
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
    #[error("no API key: set SPARKPOST_API_KEY, or key_file in the [api] section of the config")]
    NoApiKey,
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the server refused the message for {0}")]
    Refused(String),
    #[error(transparent)]
    Failed(#[from] crate::failed::FailedError),
    #[error(transparent)]
    Harvest(#[from] crate::harvest::SetupError),
    /// `certs import` refused some inputs (each is already printed)
    #[error("some replies gave no certificate")]
    Refused65,
    /// `certs import` deferred some inputs, none refused (each is already printed)
    #[error("some replies are to be tried again later")]
    Deferred75,
    /// `once` finished with inputs failed or deferred (the summary is already printed)
    #[error("not everything was delivered: {0}")]
    Outcome(Summary),
}

impl From<crate::demo::DemoError> for CliError {
    fn from(e: crate::demo::DemoError) -> Self {
        use crate::demo::DemoError;
        match e {
            DemoError::Output { path, source } => CliError::Output { path, source },
            DemoError::Config(e) => CliError::Config(e),
            DemoError::Daemon(e) => CliError::Daemon(e),
        }
    }
}

impl CliError {
    /// sysexits(3): 65 data, 66 no input, 74 I/O, 75 temporary, 78 configuration.
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
            CliError::Daemon(DaemonError::Fatal(_)) => 74,
            CliError::NoSmtpHost | CliError::NoApiKey => 78,
            CliError::Check(code) => *code,
            CliError::Smtp(e) if e.is_permanent() => 65,
            CliError::Smtp(_) => 69,
            CliError::Api(e) if e.is_permanent() => 65,
            CliError::Api(_) => 69,
            CliError::Refused(_) => 65,
            CliError::Harvest(crate::harvest::SetupError::CertsFolder(..)) => 66,
            CliError::Harvest(_) => 78,
            CliError::Refused65 => 65,
            CliError::Deferred75 => 75,
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
        Command::Send(args) => send::send_command(cli.config.as_deref(), args),
        Command::Check { smtp, api } => {
            let config = Config::locate(cli.config.as_deref())?;
            let report = crate::check::check(&config, smtp, api);
            print!("{}", report.render());
            match report.exit_code() {
                0 => Ok(()),
                code => Err(CliError::Check(code)),
            }
        }
        Command::Run => {
            let config = Config::locate(cli.config.as_deref())?;
            let summary = daemon::run(config, Mode::Run, signal_control()?)?;
            log::info!("stopped: {summary}");
            Ok(())
        }
        Command::Once => {
            let config = Config::locate(cli.config.as_deref())?;
            let summary = daemon::run(config, Mode::Once, signal_control()?)?;
            println!("{}", summary.with_rate());
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
                crate::harvest::command::Outcome::SomeDeferred => Err(CliError::Deferred75),
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
    args.folders.apply(&mut config);
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

/// SIGTERM and SIGINT stop the daemon, SIGHUP reloads it (see `daemon::Control`).
fn signal_control() -> Result<daemon::Control, CliError> {
    daemon::Control::from_signals().map_err(|source| CliError::Input {
        path: "(signal handlers)".into(),
        source,
    })
}

/// Reads `file` (`-`: stdin) and seals it with `config`; errors name the input as `shown`.
fn seal_file(config: &Config, file: &Path, shown: &Path) -> Result<Vec<seal::Sealed>, CliError> {
    let input = read_input(file).map_err(|source| CliError::Input {
        path: shown.to_path_buf(),
        source,
    })?;
    let keyring = keyring::load(config)?;
    seal::seal(&input, &config.seal, &config.limits, &keyring, unix_now()).map_err(|source| {
        CliError::Seal {
            path: shown.to_path_buf(),
            source,
        }
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
