//! Message rows, and the two writes of a chat turn.
//!
//! A turn is written in two steps so that nothing is lost and nothing is stored twice:
//! [`start_turn`] stores the user's message and an empty assistant message marked incomplete
//! (one transaction, before the model is asked); [`finish_reply`] later fills that same row
//! with the reply and its token counts (one statement, idempotent). A crash in between
//! leaves an honest "incomplete" row rather than nothing; a refused request removes both
//! rows again ([`cancel_turn`]) so a retry does not duplicate the user's message.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use super::conversations::{Conversation, COLUMNS};
use super::{DbError, Pool};
use crate::auth::Identity;

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: i64,
    pub conversation_id: Uuid,
    pub role: String,
    pub content: String,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    /// False while the reply streams, and for a reply that was cut short.
    pub complete: bool,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const MESSAGE_COLUMNS: &str = "id, conversation_id, role, content, prompt_tokens, \
                               completion_tokens, complete, request_id, created_at";

impl Message {
    fn from_row(row: &Row) -> Message {
        Message {
            id: row.get(0),
            conversation_id: row.get(1),
            role: row.get(2),
            content: row.get(3),
            prompt_tokens: row.get(4),
            completion_tokens: row.get(5),
            complete: row.get(6),
            request_id: row.get(7),
            created_at: row.get(8),
        }
    }
}

/// A conversation's messages in order, `limit` of them after message `after`. The caller
/// has already checked that the conversation is visible to it.
pub async fn list(
    pool: &Pool,
    conversation: Uuid,
    limit: i64,
    after: Option<i64>,
) -> Result<Vec<Message>, DbError> {
    let conn = pool.get().await?;
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND id > $2 \
         ORDER BY id LIMIT $3"
    );
    let rows = conn
        .query(&sql, &[&conversation, &after.unwrap_or(0), &limit])
        .await?;
    Ok(rows.iter().map(Message::from_row).collect())
}

/// What the model is sent, and where its reply goes.
pub struct Turn {
    pub conversation: Conversation,
    /// (role, content) of the most recent messages, oldest first, ending with the new one.
    pub history: Vec<(String, String)>,
    pub user_message_id: i64,
    pub assistant_message_id: i64,
}

/// Stores the user's message and the assistant's placeholder; `None` when the caller may
/// not see the conversation. The conversation row is locked for the transaction, so two
/// messages posted at once to one conversation are ordered, not interleaved.
pub async fn start_turn(
    pool: &Pool,
    who: &Identity,
    conversation: Uuid,
    content: &str,
    history_limit: i64,
    request_id: &str,
) -> Result<Option<Turn>, DbError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let sql = format!(
        "UPDATE conversations SET updated_at = now() \
         WHERE id = $1 AND org_id = $2 AND (user_id = $3 OR $4) RETURNING {COLUMNS}"
    );
    let Some(row) = tx
        .query_opt(&sql, &[&conversation, &who.org, &who.user, &who.admin])
        .await?
    else {
        return Ok(None);
    };
    let conversation = Conversation::from_row(&row);
    // Earlier replies still streaming (empty placeholders) are not history yet.
    let rows = tx
        .query(
            "SELECT role, content FROM ( \
                 SELECT id, role, content FROM messages \
                 WHERE conversation_id = $1 AND NOT (role = 'assistant' AND content = '' AND NOT complete) \
                 ORDER BY id DESC LIMIT $2) recent \
             ORDER BY id",
            &[&conversation.id, &(history_limit - 1).max(0)],
        )
        .await?;
    let mut history: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    history.push(("user".into(), content.to_owned()));
    // One multi-row INSERT: rows get their ids in the order listed, so the user's message
    // always sorts before its reply.
    let rows = tx
        .query(
            "INSERT INTO messages (conversation_id, role, content, complete, request_id) \
             VALUES ($1, 'user', $2, true, NULL), ($1, 'assistant', '', false, $3) \
             RETURNING id, role",
            &[&conversation.id, &content, &request_id],
        )
        .await?;
    let id_of = |role: &str| {
        rows.iter()
            .find(|r| r.get::<_, &str>(1) == role)
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or_default()
    };
    let (user_message_id, assistant_message_id) = (id_of("user"), id_of("assistant"));
    tx.commit().await?;
    Ok(Some(Turn {
        conversation,
        history,
        user_message_id,
        assistant_message_id,
    }))
}

/// Removes a turn the model never answered (the gateway refused it, or was unreachable).
pub async fn cancel_turn(pool: &Pool, turn: &Turn) -> Result<(), DbError> {
    let conn = pool.get().await?;
    conn.execute(
        "DELETE FROM messages WHERE id = ANY($1) AND conversation_id = $2",
        &[
            &vec![turn.user_message_id, turn.assistant_message_id],
            &turn.conversation.id,
        ],
    )
    .await?;
    Ok(())
}

/// The reply as it ended: written over the placeholder, so running it again changes nothing.
pub struct Reply<'a> {
    pub message_id: i64,
    pub content: &'a str,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub complete: bool,
}

pub async fn finish_reply(pool: &Pool, reply: &Reply<'_>) -> Result<(), DbError> {
    let conn = pool.get().await?;
    conn.execute(
        "WITH m AS ( \
             UPDATE messages SET content = $2, prompt_tokens = $3, completion_tokens = $4, \
                 complete = $5 \
             WHERE id = $1 RETURNING conversation_id) \
         UPDATE conversations SET updated_at = now() WHERE id = (SELECT conversation_id FROM m)",
        &[
            &reply.message_id,
            &reply.content,
            &reply.prompt_tokens,
            &reply.completion_tokens,
            &reply.complete,
        ],
    )
    .await?;
    Ok(())
}
