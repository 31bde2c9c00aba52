//! `shardfs pack`: the command's arguments become the library's `PackOptions`, and the summary
//! one line.

use super::Failure;
use super::args::{CodecArg, LossyArg, PackArgs};
use shardfs::codec::CodecChoice;
use shardfs::member::Options;
use shardfs::store::base::BaseChoice;
use shardfs::store::writer::{Narrowing, PackOptions, pack};
use shardfs::units::{count, format_bytes, format_rate, ratio};

pub fn run(args: PackArgs, members: Options) -> Result<(), Failure> {
    let opts = PackOptions {
        name: args.name,
        replicas: args.replicas,
        chunk_size: args.chunk_size,
        codec: match args.codec {
            CodecArg::Auto => CodecChoice::Auto,
            CodecArg::Zstd => CodecChoice::Zstd,
            CodecArg::None => CodecChoice::None,
        },
        level: args.level,
        placement: args.placement,
        partition: args.partition,
        lossy: args.lossy.map(|l| match l {
            LossyArg::Bf16 => Narrowing::Bf16,
            LossyArg::Fp8 => Narrowing::Fp8,
        }),
        base: args.base.map(|b| match b.as_str() {
            "auto" => BaseChoice::Auto,
            _ => BaseChoice::Named(b),
        }),
        init: args.init,
        follow_links: args.follow_links,
        progress: super::progress::bar(true),
        member: members,
    };
    keep_chunk_buffers();
    let s = pack(&args.src, &args.store, &opts)?;
    let deltas = match &s.base {
        Some(base) => format!(", {} as deltas against {base}", s.deltas),
        None => String::new(),
    };
    shardfs::say!(
        "packed {} (version {}): {}, {} in, {} stored, ratio {:.3}, {} ({} new{deltas}), {:.1}s, {}",
        s.name,
        s.version,
        count(s.files as u64, "file"),
        format_bytes(s.bytes_in),
        format_bytes(s.bytes_stored),
        ratio(s.bytes_in, s.bytes_stored),
        count(s.chunks as u64, "chunk"),
        s.new_chunks,
        s.seconds,
        format_rate(s.bytes_in, s.seconds)
    );
    Ok(())
}

/// Tunes the process's allocator for a pack. Every chunk takes buffers of its size (the source
/// bytes, the encoded image, zstd's output). By default the allocator maps buffers that large
/// afresh and gives freed ones back at once, so each chunk's buffers are new pages to fault in
/// and zero: measured at a quarter of pack's CPU time. Kept in the allocator's heap instead,
/// they serve the next chunks. A process-wide choice, so the binary makes it, not the library.
fn keep_chunk_buffers() {
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
