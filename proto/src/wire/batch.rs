//! The BATCH envelope's `data` layout as the client parses it (core.md §1.6):
//! LE u32 count, then per message an LE u32 length and the MsgPack bytes.

/// Packs already-encoded messages into a BATCH `data` blob.
pub fn pack_batch_data<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let messages: Vec<&[u8]> = messages.into_iter().collect();
    let total: usize = messages.iter().map(|m| 4 + m.len()).sum();
    let mut out = Vec::with_capacity(4 + total);
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_le_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// Splits a BATCH `data` blob into its inner messages; `None` if truncated.
pub fn unpack_batch_data(data: &[u8]) -> Option<Vec<&[u8]>> {
    let read_u32 = |at: usize| -> Option<usize> {
        let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes) as usize)
    };
    let count = read_u32(0)?;
    let mut offset = 4;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = read_u32(offset)?;
        offset += 4;
        out.push(data.get(offset..offset + len)?);
        offset += len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_worked_example_of_the_spec() {
        let ack = [
            0x81, 0xa4, b't', b'y', b'p', b'e', 0xa8, b'A', b'U', b'T', b'H', b'_', b'A', b'C',
            b'K',
        ];
        let data = pack_batch_data([&ack[..], &[0x80][..]]);
        assert_eq!(&data[..8], &[2, 0, 0, 0, 15, 0, 0, 0]);
        assert_eq!(unpack_batch_data(&data), Some(vec![&ack[..], &[0x80][..]]));
        assert_eq!(unpack_batch_data(&data[..data.len() - 1]), None);
    }
}
