//! The command line: flags, subcommands and their help texts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use paz_core::{HumanDuration, PortSpec, Strategy, VolumeSpec};

use crate::parse::{parse_env, parse_port, parse_release, parse_volume};

/// The Paz command-line interface: declare services, deploy them with zero downtime, scale,
/// roll back and look at their history.
#[derive(Debug, Parser)]
#[command(name = "paz", version, propagate_version = true)]
#[command(
    after_help = "Environment: PAZ_SERVER, PAZ_TOKEN, PAZ_OUTPUT, PAZ_DATA_DIR \
    (without a token, <PAZ_DATA_DIR or ./paz-data>/admin-token is used for a local server).\n\
    Exit codes: 0 success, 1 failure (API error, network, failed deployment), 2 bad usage."
)]
pub struct Cli {
    /// The URL of the paz-server.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PAZ_SERVER",
        default_value = "http://127.0.0.1:7700",
        value_name = "URL"
    )]
    pub server: String,

    /// The API token (bearer).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PAZ_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// A PEM file of root certificates to trust for an `https://` server with a private CA
    /// (certificates are always verified; the system's roots are trusted too).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PAZ_CA_FILE",
        value_name = "PEM"
    )]
    pub ca_file: Option<PathBuf>,

    /// How to print data on stdout.
    #[arg(
        long,
        short = 'o',
        global = true,
        help_heading = "Global options",
        env = "PAZ_OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The output format of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables for people (borderless when stdout is not a terminal).
    Table,
    /// JSON, as the REST API returns it.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show, update and delete services.
    #[command(subcommand, visible_alias = "svc")]
    Service(ServiceCommand),
    /// Deploy a service: make a new release (optionally with a new image) and roll it out.
    Deploy(DeployArgs),
    /// Roll a service back to an earlier release (by default the one before the current).
    Rollback(RollbackArgs),
    /// Move a canary deployment to its next traffic step.
    Promote {
        /// The service.
        name: String,
    },
    /// Stop a service's running deployment: it fails and the previous release keeps serving.
    Abort {
        /// The service.
        name: String,
    },
    /// Show how services are doing.
    ///
    /// Without NAME, one line per service: its release, healthy/desired instances, last
    /// deployment and number of problems. With NAME, the service in detail: its latest
    /// deployment with its steps, its instances and its problems.
    Status {
        /// The service; without it, every service (and, in a cluster, its replicas).
        name: Option<String>,
        /// Only the cluster: the replicas sharing the store, the leader, the routers and the
        /// store's health (etcd: its members).
        #[arg(long, conflicts_with = "name")]
        cluster: bool,
    },
    /// Print the output of a service's instances.
    ///
    /// Each line is printed as `<instance> | <line>` on stdout, whether the instance wrote it
    /// to its stdout or its stderr; `--output json` prints each as one JSON object per line
    /// (`{"instance", "stream", "line"}`).
    Logs(LogsArgs),
    /// Follow the server's events as they happen (services, releases, deployments and their
    /// steps, instances), one line each (`--output json`: one JSON object per line).
    ///
    /// A dropped connection is resumed where it stopped (`Last-Event-ID`); when the server
    /// cannot give the events missed (it restarted), a line says so. Stop with Ctrl-C.
    Events {
        /// Only the events of this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// Set the number of instances of a service (no new release).
    Scale {
        /// The service.
        name: String,
        /// The new instance count (0 to 1000).
        instances: u32,
    },
    /// List the releases of a service.
    Releases {
        /// The service.
        name: String,
    },
    /// Show the deploy history of a service.
    History {
        /// The service.
        name: String,
    },
    /// List the hosts that run instances.
    Hosts,
    /// Apply a manifest (paz.toml): create and update the services it declares.
    Apply(ApplyArgs),
    /// Set, list and remove a service's secrets (write-only environment variables).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Create, list and revoke scoped API tokens (e.g. a deploy-only token for CI).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Deploy on a push: create, list, change, rotate and delete a service's hooks (Docker
    /// Hub, a registry's notifications, a signed CI request).
    #[command(subcommand)]
    Hook(HookCommand),
    /// Show what a service's hooks were sent and what became of each delivery.
    Deliveries {
        /// The service.
        name: String,
    },
    /// Export and import the whole state: the backup, and the way to move to another store
    /// (embedded ↔ etcd). Needs an admin token.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `paz service …`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Declare a new service; Paz makes release v1 and deploys it.
    Create(CreateArgs),
    /// List the services.
    #[command(visible_alias = "ls")]
    List,
    /// Show one service.
    Show {
        /// The service.
        name: String,
    },
    /// Change some fields of a service (a merge patch of only the given flags).
    Update(UpdateArgs),
    /// Delete a service with its releases and deployment history.
    #[command(visible_alias = "rm")]
    Delete {
        /// The service.
        name: String,
    },
}

/// `paz secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret, reading its value from stdin (or --from-file), never from the command
    /// line; the service is deployed with it (a new release).
    ///
    /// e.g. `printf %s "$DB_PASSWORD" | paz secret set web DB_PASSWORD`. One trailing
    /// newline is dropped.
    Set(SecretSetArgs),
    /// List a service's secrets: names and when each was set, never the values.
    #[command(visible_alias = "ls")]
    List {
        /// The service.
        name: String,
    },
    /// Remove a secret; the service is deployed without it (a new release).
    #[command(visible_alias = "rm")]
    Remove {
        /// The service.
        name: String,
        /// The secret.
        secret: String,
        /// How to wait.
        #[command(flatten)]
        follow: FollowArgs,
    },
}

/// `paz secret set`.
#[derive(Debug, Args)]
pub struct SecretSetArgs {
    /// The service.
    pub name: String,
    /// The secret: the environment variable its instances get.
    pub secret: String,
    /// Read the value from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// How to wait.
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `paz token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it on stdout, once (only its hash is kept).
    ///
    /// e.g. `paz token create ci --scope deploy --service web` for a CI job that may deploy
    /// and roll back `web` and read its status, and nothing else.
    Create(TokenCreateArgs),
    /// List the tokens (never the tokens themselves).
    #[command(visible_alias = "ls")]
    List,
    /// Revoke a token by name or id: it stops working at once.
    #[command(visible_alias = "rm")]
    Revoke {
        /// The token's name or id.
        name: String,
    },
}

/// `paz admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Export the whole state as a versioned JSON document (`paz-state` version 1), to
    /// stdout or to a file (written with mode 0600: it holds token hashes and sealed
    /// secrets).
    ///
    /// e.g. `paz admin export --file paz-backup.json`. Hosts are not included (they register
    /// again); secrets stay sealed, so the server that imports it needs the same secret key.
    Export {
        /// Write to this file (mode 0600) instead of stdout.
        #[arg(long, short = 'f', value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Import a state export into the server, all or nothing.
    ///
    /// e.g. `paz admin import paz-backup.json`. A server that already holds state refuses
    /// it unless --replace. The server's secret key must be the exporting server's when
    /// there are secrets (`<data dir>/secret-key` or PAZ_SECRET_KEY).
    Import {
        /// The export to import (`-`: stdin).
        file: PathBuf,
        /// Replace the server's state (its services, releases, tokens…) with the export's.
        #[arg(long)]
        replace: bool,
    },
}

/// `paz hook …`.
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Create a hook; prints its secret (for Docker Hub: the URL to paste) on stdout, once.
    ///
    /// e.g. `paz hook create web --source registry --tag 'v*'`: the registry's pushes of a
    /// tag starting with v deploy web.
    Create(HookCreateArgs),
    /// List a service's hooks (never their secrets).
    #[command(visible_alias = "ls")]
    List {
        /// The service.
        name: String,
    },
    /// Change a hook's tag filter (its secret stays).
    Update(HookUpdateArgs),
    /// Give a hook a new secret, printed once; the old one stops working at once.
    Rotate(HookArgs),
    /// Delete a hook; its secret stops working at once.
    #[command(visible_alias = "rm")]
    Delete(HookArgs),
}

/// `paz hook create`.
#[derive(Debug, Args)]
pub struct HookCreateArgs {
    /// The service it deploys.
    pub name: String,
    /// Where its deliveries come from.
    #[arg(long, value_enum)]
    pub source: HookSourceArg,
    /// Only pushed tags matching this deploy: exact (`main`) or a glob (`v*`, `1.?`);
    /// default: every tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
}

/// `paz hook update`.
#[derive(Debug, Args)]
pub struct HookUpdateArgs {
    /// The service.
    pub name: String,
    /// Which hook.
    #[arg(long, value_enum)]
    pub source: HookSourceArg,
    /// The new tag filter.
    #[arg(long, value_name = "TAG", required_unless_present = "any_tag")]
    pub tag: Option<String>,
    /// Deploy every tag (no filter).
    #[arg(long, conflicts_with = "tag")]
    pub any_tag: bool,
}

/// `paz hook rotate|delete`.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// The service.
    pub name: String,
    /// Which hook.
    #[arg(long, value_enum)]
    pub source: HookSourceArg,
}

/// Hook sources, as flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HookSourceArg {
    /// Docker Hub's webhook, on a secret URL.
    Dockerhub,
    /// A registry's notifications (docker-registry, distribution), with a bearer token.
    Registry,
    /// A CI job's request, signed with HMAC-SHA256.
    Ci,
}

impl From<HookSourceArg> for paz_core::hook::HookSource {
    fn from(value: HookSourceArg) -> Self {
        match value {
            HookSourceArg::Dockerhub => Self::Dockerhub,
            HookSourceArg::Registry => Self::Registry,
            HookSourceArg::Ci => Self::Ci,
        }
    }
}

/// `paz token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// A name for the token (a-z, 0-9, '.', '_', '-'), e.g. `ci`.
    pub name: String,
    /// What it may do.
    #[arg(long, value_enum)]
    pub scope: ScopeArg,
    /// For `--scope deploy`: a service it may deploy (repeatable, at least one).
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// How long it works, e.g. `720h` (30 days) (default: until revoked).
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<HumanDuration>,
}

/// Token scopes, as flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// Read everything, change nothing.
    Read,
    /// Deploy, roll back and read the named services only.
    Deploy,
    /// Everything the admin token can.
    Admin,
}

impl From<ScopeArg> for paz_core::token::Scope {
    fn from(value: ScopeArg) -> Self {
        match value {
            ScopeArg::Read => Self::Read,
            ScopeArg::Deploy => Self::Deploy,
            ScopeArg::Admin => Self::Admin,
        }
    }
}

/// `paz service create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The service name (a DNS label: a-z, 0-9 and '-').
    pub name: String,
    /// The image, e.g. `demo:v1` or `registry.local:5000/team/app:1.2`.
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// The service's settings.
    #[command(flatten)]
    pub flags: SpecFlags,
    /// The command to run instead of the image's (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `paz service update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The service.
    pub name: String,
    /// A new image.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// The settings to change.
    #[command(flatten)]
    pub flags: SpecFlags,
    /// Remove an environment variable (repeatable).
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,
    /// Replace the command (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The settings of a service shared by `create` and `update`; everything is optional.
#[derive(Debug, Default, Args)]
pub struct SpecFlags {
    /// How many instances to run (0 to 1000).
    #[arg(long, value_name = "N")]
    pub instances: Option<u32>,
    /// A container port, `PORT` or `PORT/http` or `PORT/tcp` (repeatable; on update, replaces
    /// the list). The first http port receives the routed traffic.
    #[arg(long = "port", value_name = "PORT[/PROTO]", value_parser = parse_port)]
    pub ports: Vec<PortSpec>,
    /// Route `<name>.<cluster domain>` to the service (`--public=false` to stop).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub public: Option<bool>,
    /// Redirect plain HTTP to HTTPS for the service's host names once they have a certificate
    /// (the default); `--https-redirect=false` serves them over plain HTTP too.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub https_redirect: Option<bool>,
    /// An extra domain routed to the service (repeatable; on update, replaces the list).
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// An environment variable `KEY=VALUE` (repeatable; on update, merged into the current
    /// ones).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// The HTTP path of the health check, e.g. `/healthz`.
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// A volume `SOURCE:TARGET[:ro]`; the source is a volume name or an absolute host path
    /// (repeatable; on update, replaces the list).
    #[arg(long = "volume", value_name = "SRC:DST[:ro]", value_parser = parse_volume)]
    pub volumes: Vec<VolumeSpec>,
    /// The memory limit of each instance, in MiB.
    #[arg(long, value_name = "MIB")]
    pub memory_mb: Option<u64>,
    /// The CPU limit of each instance, in cores (e.g. 0.5).
    #[arg(long, value_name = "CORES")]
    pub cpus: Option<f64>,
    /// The deploy strategy.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub strategy: Option<StrategyArg>,
    /// How many new instances a rolling deploy starts at once (1 to 100).
    #[arg(long, value_name = "N")]
    pub max_surge: Option<u32>,
}

/// The deploy strategies, as flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Start new instances first, a batch at a time, then drain and stop old ones.
    Rolling,
    /// Stop all old instances, then start new ones.
    Recreate,
    /// Start all new instances, then switch all traffic at once.
    BlueGreen,
    /// Shift traffic to the new release in weighted steps.
    Canary,
}

impl From<StrategyArg> for Strategy {
    fn from(value: StrategyArg) -> Self {
        match value {
            StrategyArg::Rolling => Strategy::Rolling,
            StrategyArg::Recreate => Strategy::Recreate,
            StrategyArg::BlueGreen => Strategy::BlueGreen,
            StrategyArg::Canary => Strategy::Canary,
        }
    }
}

/// How to wait for a deployment.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Print the deployment and return at once instead of following its progress.
    #[arg(long)]
    pub detach: bool,
    /// How long to follow the deployment before giving up (it goes on on the server).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: HumanDuration,
}

/// `paz deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service.
    pub name: String,
    /// The image to deploy; without it the current spec is released again.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// How to wait.
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `paz rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The service.
    pub name: String,
    /// The release to go back to, `v3` or `3`.
    #[arg(long, value_name = "RELEASE", value_parser = parse_release)]
    pub to: Option<u64>,
    /// How to wait.
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `paz logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service.
    pub name: String,
    /// Keep printing new lines as the instances write them (stop with Ctrl-C).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines of each instance's past output.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

/// `paz apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The manifest (`-` reads stdin).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "paz.toml"
    )]
    pub file: PathBuf,
    /// Only print what would change.
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn public_takes_an_optional_value() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Service(ServiceCommand::Update(update)) = cli.command else {
                panic!()
            };
            update.flags.public
        };
        assert_eq!(parse(&["paz", "service", "update", "web"]), None);
        assert_eq!(
            parse(&["paz", "service", "update", "web", "--public"]),
            Some(true)
        );
        assert_eq!(
            parse(&["paz", "service", "update", "web", "--public=false"]),
            Some(false)
        );
    }

    #[test]
    fn https_redirect_takes_an_optional_value() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Service(ServiceCommand::Create(create)) = cli.command else {
                panic!()
            };
            create.flags.https_redirect
        };
        let create = ["paz", "service", "create", "web", "--image", "demo:v1"];
        assert_eq!(parse(&create), None);
        let with = |flag: &'static str| {
            let mut args = create.to_vec();
            args.push(flag);
            parse(&args)
        };
        assert_eq!(with("--https-redirect"), Some(true));
        assert_eq!(with("--https-redirect=false"), Some(false));
        assert!(Cli::try_parse_from([&create[..], &["--https-redirect=maybe"]].concat()).is_err());
    }

    #[test]
    fn logs_takes_follow_and_tail() {
        let cli = Cli::try_parse_from(["paz", "logs", "web", "-f", "--tail", "20"]).unwrap();
        let Command::Logs(logs) = cli.command else {
            panic!()
        };
        assert_eq!(
            (logs.name.as_str(), logs.follow, logs.tail),
            ("web", true, Some(20))
        );
        let cli = Cli::try_parse_from(["paz", "logs", "web"]).unwrap();
        let Command::Logs(logs) = cli.command else {
            panic!()
        };
        assert_eq!((logs.follow, logs.tail), (false, None));
    }

    #[test]
    fn bad_flag_values_are_usage_errors() {
        for args in [
            &[
                "paz", "service", "create", "web", "--image", "x", "--env", "BAD",
            ][..],
            &[
                "paz", "service", "create", "web", "--image", "x", "--port", "80/udp",
            ],
            &[
                "paz", "service", "create", "web", "--image", "x", "--volume", "data",
            ],
            &["paz", "deploy", "web", "--timeout", "soon"],
            &["paz", "rollback", "web", "--to", "vX"],
            &["paz", "service", "create", "web"],
            &["paz", "logs"],
            &["paz", "logs", "web", "--tail", "-1"],
            &["paz", "logs", "web", "--tail", "all"],
            &["paz", "promote"],
            &["paz", "abort"],
            &["paz", "status", "web", "api"],
            &["paz", "hook", "create", "web"],
            &["paz", "hook", "create", "web", "--source", "ftp"],
            &["paz", "hook", "update", "web", "--source", "ci"],
            &[
                "paz",
                "hook",
                "update",
                "web",
                "--source",
                "ci",
                "--tag",
                "v*",
                "--any-tag",
            ],
            &["paz", "deliveries"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }
}
