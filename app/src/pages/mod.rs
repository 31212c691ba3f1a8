pub mod account;
pub mod audit;
pub mod hosts;
pub mod login;
pub mod requests;
pub mod vms;
