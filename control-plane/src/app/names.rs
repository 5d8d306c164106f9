//! Names people give things (hosts, clusters, VMs, tokens): 1 to 63 characters of
//! letters, digits, `-`, `_` and `.`, starting with a letter or digit, so they are
//! safe in file names, process titles and command lines.

use crate::error::ApiError;

pub fn validate(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "invalid_name",
            format!(
                "{what} name {name:?} is not valid: use 1 to 63 letters, digits, '-', '_' or '.', \
                 starting with a letter or digit"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn names() {
        assert!(validate("vm", "web-01").is_ok());
        assert!(validate("vm", "a").is_ok());
        assert!(validate("vm", "").is_err());
        assert!(validate("vm", "-x").is_err());
        assert!(validate("vm", "has space").is_err());
        assert!(validate("vm", &"x".repeat(64)).is_err());
        assert!(validate("vm", "semi;colon").is_err());
    }
}
