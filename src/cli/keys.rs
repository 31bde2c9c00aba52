//! The `key` commands: give a store a signing key, show which key each member names, rotate
//! the key (see `shardfs::trust` and `shardfs::sync::keys`).

use super::{Failure, print_json};
use crate::MemberParser;
use shardfs::member::MemberSpec;
use shardfs::store::Store;

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Give an unsigned store a signing key (kept in ~/.config/shardfs/keys/STORE.key, or --key)
    /// and sign its current manifests and member list; check the store with `verify` first
    Init {
        /// Every member of the store, comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Show the key this host trusts for the store and the key each member's store file names
    Show {
        /// Members of the store, comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
    },
    /// Replace the store's key by a new one endorsed by the current key, and sign everything
    /// again with it; hosts that trust the current key follow (the old key file is kept as
    /// KEY.previous)
    Rotate {
        /// Every member of the store, comma-separated, in any order
        #[arg(long, value_delimiter = ',', required = true, value_parser = MemberParser)]
        store: Vec<MemberSpec>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

pub fn key_command(cmd: KeyCommand, opts: &shardfs::member::Options) -> Result<(), Failure> {
    use shardfs::sync::keys;
    let (report, json) = match cmd {
        KeyCommand::Init { store, json } => (keys::init(Store::open_with(&store, opts)?)?, json),
        KeyCommand::Rotate { store, json } => {
            (keys::rotate(Store::open_with(&store, opts)?)?, json)
        }
        KeyCommand::Show { store } => {
            let store = Store::open_with(&store, opts)?;
            match store.trust.current() {
                Some(k) => shardfs::say!(
                    "store {}: signed; this host trusts key {k} ({})",
                    store.store_id,
                    k.hex()
                ),
                None => shardfs::say!("store {}: unsigned", store.store_id),
            }
            for m in &store.members {
                let named = m.info.keys.last().map_or("no key".to_string(), |r| {
                    shardfs::trust::keys::PublicKey::parse_hex(&r.public)
                        .map_or("a key that does not parse".into(), |k| format!("key {k}"))
                });
                shardfs::say!("  {}: names {named}", m.location());
            }
            for (location, reason) in &store.unavailable {
                shardfs::say!("  {location}: left out: {reason}");
            }
            return Ok(());
        }
    };
    if json {
        return print_json(&report);
    }
    shardfs::say!(
        "store {}: signed with key {} ({}); {} signed",
        report.store_id,
        report.key,
        report.key_file,
        shardfs::units::count(report.manifests_signed as u64, "manifest copy")
    );
    Ok(())
}
