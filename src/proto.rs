//! The code generated from `proto/` by `build.rs`: one module per proto package.
//!
//! Adding a `.proto` file under `proto/` adds its package here on the next build; nothing to list.

#![allow(clippy::all, missing_docs, unreachable_pub)]

include!(concat!(env!("OUT_DIR"), "/protos.rs"));

/// The encoded `FileDescriptorSet` of every file in `proto/`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
