pub mod hosts;
pub mod login;
