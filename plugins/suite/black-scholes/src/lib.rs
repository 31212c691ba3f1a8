//! The `black-scholes` plugin: [`passage_suite::black_scholes::BlackScholes`] through the plugin contract.

passage_suite_guest::suite_plugin!(passage_suite::black_scholes::BlackScholes);
