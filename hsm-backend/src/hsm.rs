//! (being written)
/// The HSM handle.
#[derive(Clone)]
pub struct Hsm {}
