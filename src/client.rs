pub struct Client;
pub struct Error;
