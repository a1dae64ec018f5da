//! Pagination: opaque next-page tokens and cutting one page out of a listing.

use base64::Engine as _;

/// An opaque pagination token: the offset of the next item, base64-encoded so that clients do not
/// start building tokens themselves.
pub fn encode_token(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("fakecloud:{offset}"))
}

/// Decodes a token made by [`encode_token`].
pub fn decode_token(token: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("fakecloud:")?
        .parse()
        .ok()
}

/// A pagination token that this emulator did not issue (or that points past the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPageToken;

/// One page of `items` starting at `token`, and the token of the next page.
pub fn paginate<T>(
    items: Vec<T>,
    token: Option<&str>,
    page_size: usize,
) -> Result<(Vec<T>, Option<String>), BadPageToken> {
    let start = match token {
        None | Some("") => 0,
        Some(t) => decode_token(t).ok_or(BadPageToken)?,
    };
    if start > items.len() {
        return Err(BadPageToken);
    }
    let end = start.saturating_add(page_size).min(items.len());
    let next = (end < items.len()).then(|| encode_token(end));
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_round_trips() {
        let (page, next) = paginate((0..5).collect(), None, 2).unwrap();
        assert_eq!(page, vec![0, 1]);
        let (page, next) = paginate((0..5).collect(), next.as_deref(), 2).unwrap();
        assert_eq!(page, vec![2, 3]);
        let (page, next) = paginate((0..5).collect(), next.as_deref(), 2).unwrap();
        assert_eq!((page, next), (vec![4], None));
        assert!(paginate::<u8>(vec![], Some("garbage"), 2).is_err());
    }
}
