//! The `async-api` plugin: [`passage_suite::async_api::AsyncApi`] through the plugin contract.

passage_suite_guest::suite_plugin!(passage_suite::async_api::AsyncApi);
