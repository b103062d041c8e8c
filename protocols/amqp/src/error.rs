//! AMQP 0-9-1 errors as the broker answers them: a reply code, a text, and the method that
//! failed. Codes below 500 (and 311-406) are *soft*: the channel is closed (`channel.close`)
//! and the connection lives on. The others are *hard*: the whole connection is closed
//! (`connection.close`). Texts follow RabbitMQ's `"NAME - explanation"` form, which clients
//! and their users know, cut to the 255 bytes a short string can hold.

use std::fmt;

/// One error to answer with `channel.close` or `connection.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// Reply code (AMQP constants: 404 NOT_FOUND, 406 PRECONDITION_FAILED, ...).
    pub code: u16,
    /// Reply text, already in `NAME - explanation` form.
    pub text: String,
    /// Class of the method that failed (0 when none).
    pub class_id: u16,
    /// Method id of the method that failed (0 when none).
    pub method_id: u16,
}

/// Reply codes used by the broker.
pub mod code {
    /// Message body larger than allowed.
    pub const CONTENT_TOO_LARGE: u16 = 311;
    /// Mandatory message could not be routed (basic.return).
    pub const NO_ROUTE: u16 = 312;
    /// The client was closed by the server.
    pub const CONNECTION_FORCED: u16 = 320;
    /// Access refused (default exchange, reserved names, exclusive use).
    pub const ACCESS_REFUSED: u16 = 403;
    /// No such exchange or queue.
    pub const NOT_FOUND: u16 = 404;
    /// Exclusive queue owned by another connection.
    pub const RESOURCE_LOCKED: u16 = 405;
    /// Inequivalent redeclare, unknown delivery tag, bad arguments.
    pub const PRECONDITION_FAILED: u16 = 406;
    /// Malformed frame.
    pub const FRAME_ERROR: u16 = 501;
    /// Malformed method fields.
    pub const SYNTAX_ERROR: u16 = 502;
    /// Method not valid here.
    pub const COMMAND_INVALID: u16 = 503;
    /// Frame on a channel that is not open, or a second open.
    pub const CHANNEL_ERROR: u16 = 504;
    /// A frame of the wrong type in the content sequence.
    pub const UNEXPECTED_FRAME: u16 = 505;
    /// Out of a resource.
    pub const RESOURCE_ERROR: u16 = 506;
    /// Not allowed: vhost, limits, reused consumer tag.
    pub const NOT_ALLOWED: u16 = 530;
    /// Not implemented by this broker.
    pub const NOT_IMPLEMENTED: u16 = 540;
    /// Broker fault (storage).
    pub const INTERNAL_ERROR: u16 = 541;
}

fn name(code: u16) -> &'static str {
    match code {
        311 => "CONTENT_TOO_LARGE",
        312 => "NO_ROUTE",
        313 => "NO_CONSUMERS",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl AmqpError {
    /// An error with `code` and an explanation (the `NAME - ` prefix is added).
    pub fn new(code: u16, explanation: impl fmt::Display) -> Self {
        let text = format!("{} - {explanation}", name(code));
        Self {
            code,
            text: truncate(&text, 255).to_string(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// The same error, naming the method that failed.
    pub fn on(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// True when the error closes the connection rather than the channel.
    pub fn is_hard(&self) -> bool {
        !matches!(self.code, 311..=313 | 403..=406)
    }

    /// 404.
    pub fn not_found(explanation: impl fmt::Display) -> Self {
        Self::new(code::NOT_FOUND, explanation)
    }
    /// 406.
    pub fn precondition(explanation: impl fmt::Display) -> Self {
        Self::new(code::PRECONDITION_FAILED, explanation)
    }
    /// 403.
    pub fn access_refused(explanation: impl fmt::Display) -> Self {
        Self::new(code::ACCESS_REFUSED, explanation)
    }
    /// 405.
    pub fn resource_locked(explanation: impl fmt::Display) -> Self {
        Self::new(code::RESOURCE_LOCKED, explanation)
    }
    /// 530.
    pub fn not_allowed(explanation: impl fmt::Display) -> Self {
        Self::new(code::NOT_ALLOWED, explanation)
    }
    /// 540.
    pub fn not_implemented(explanation: impl fmt::Display) -> Self {
        Self::new(code::NOT_IMPLEMENTED, explanation)
    }
    /// 503.
    pub fn command_invalid(explanation: impl fmt::Display) -> Self {
        Self::new(code::COMMAND_INVALID, explanation)
    }
    /// 504.
    pub fn channel_error(explanation: impl fmt::Display) -> Self {
        Self::new(code::CHANNEL_ERROR, explanation)
    }
    /// 501.
    pub fn frame_error(explanation: impl fmt::Display) -> Self {
        Self::new(code::FRAME_ERROR, explanation)
    }
    /// 505.
    pub fn unexpected_frame(explanation: impl fmt::Display) -> Self {
        Self::new(code::UNEXPECTED_FRAME, explanation)
    }
    /// 541.
    pub fn internal(explanation: impl fmt::Display) -> Self {
        Self::new(code::INTERNAL_ERROR, explanation)
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (method {}.{})",
            self.code, self.text, self.class_id, self.method_id
        )
    }
}

impl std::error::Error for AmqpError {}

/// How RabbitMQ names a queue or exchange in error texts.
pub fn queue_ref(name: &str) -> String {
    format!("queue '{name}' in vhost '/'")
}

/// How RabbitMQ names an exchange in error texts.
pub fn exchange_ref(name: &str) -> String {
    format!("exchange '{name}' in vhost '/'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_named_and_bounded() {
        let e = AmqpError::not_found(format!("no {}", queue_ref("q"))).on(50, 10);
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        assert!(!e.is_hard());
        assert_eq!((e.class_id, e.method_id), (50, 10));
        let long = AmqpError::precondition("é".repeat(300));
        assert!(long.text.len() <= 255);
        assert!(AmqpError::frame_error("x").is_hard());
        assert!(AmqpError::not_allowed("x").is_hard());
    }
}
