//! The sign-in form.

use maud::{Markup, html};

use crate::ui::layout;

/// The sign-in page: the admin token, with the form's own CSRF token; `error` goes next to
/// the token field, `note` above the form.
pub(crate) fn login(csrf: &str, next: &str, error: Option<&str>, note: Option<&str>) -> Markup {
    layout::bare_page(
        "Sign in",
        html! {
            section.card.narrow.signin {
                h1 { span.logo aria-hidden="true" {} "Paz" }
                p.muted { "Sign in with the admin token: " code { "PAZ_TOKEN" } ", or the file "
                    code { "admin-token" } " in the server's data directory." }
                @if let Some(note) = note {
                    p.flash role="status" { (note) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    div.field.invalid[error.is_some()] {
                        label for="token" { "Admin token" }
                        input #token type="password" name="token" required autocomplete="current-password"
                            autofocus spellcheck="false"
                            aria-invalid=[error.map(|_| "true")]
                            aria-describedby=[error.map(|_| "err-token")];
                        @if let Some(error) = error {
                            p.error #err-token { (error) }
                        }
                    }
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}
