//! `weft store …`: offline maintenance of a controller's store. `weft store migrate` copies
//! every key from one store URL to another (embedded redb ↔ etcd), e.g. to move a single
//! controller onto etcd before running several replicas (see README "High availability").

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// Arguments of `weft store`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy every key from one store to another (stop the controllers first).
    Migrate(MigrateArgs),
}

/// Arguments of `weft store migrate`.
#[derive(Debug, Args)]
struct MigrateArgs {
    /// Source store URL: a directory, `redb:///path/file.redb` or `etcd://host:port[/prefix]`.
    #[arg(long)]
    from: String,
    /// Destination store URL (same forms as --from).
    #[arg(long)]
    to: String,
    /// Replace the destination's contents even if it is not empty.
    #[arg(long)]
    force: bool,
}

/// Runs `weft store …`.
pub async fn run(args: StoreArgs) -> Result<()> {
    match args.command {
        StoreCommand::Migrate(m) => {
            if m.from == m.to {
                anyhow::bail!("--from and --to are the same store ({})", m.from);
            }
            let from = weft_store::open_url(&m.from).with_context(|| format!("opening --from {}", m.from))?;
            let to = weft_store::open_url(&m.to).with_context(|| format!("opening --to {}", m.to))?;
            let report = weft_store::copy_all(from.as_ref(), to.as_ref(), m.force)
                .await
                .with_context(|| format!("copying {} to {}", m.from, m.to))?;
            println!(
                "copied {} keys from {} to {} ({} stale keys removed)",
                report.copied, m.from, m.to, report.removed
            );
            Ok(())
        }
    }
}
