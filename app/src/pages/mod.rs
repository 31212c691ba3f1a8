pub mod hosts;
pub mod login;
pub mod requests;
