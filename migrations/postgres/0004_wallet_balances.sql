-- The running balance of every driver wallet (`wallet:{user}:{address}`),
-- kept in the same transaction as each ledger movement. A debit changes the
-- row and reads the result in one statement under the row's lock, and is
-- refused when it would leave the wallet below zero: two settlements racing
-- for the same money cannot both take it (the second waits for the first's
-- commit and sees its result). The entries stay the truth; this row is their
-- sum per wallet and currency.
CREATE TABLE wallet_balances (
    account       TEXT NOT NULL,
    currency      TEXT NOT NULL,
    balance_minor BIGINT NOT NULL,
    PRIMARY KEY (account, currency)
);

-- The wallets as the ledger has them so far.
INSERT INTO wallet_balances (account, currency, balance_minor)
SELECT account, currency, CAST(SUM(amount_minor) AS BIGINT)
FROM ledger_entries
WHERE substr(account, 1, 7) = 'wallet:'
GROUP BY account, currency;
