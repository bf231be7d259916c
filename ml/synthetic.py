"""Seeded demo data for both domains: customer requests (text → intent) and daily retail demand.

The generators are what `make demo` and the tests run on, so they are deterministic (same arguments
and seed give identical frames) and deliberately imperfect in the ways real feeds are: imbalance,
typos, duplicates and near-duplicates for requests; missing days, outliers, holidays, promotions and
an intermittent item for demand. Everything the validation and modelling layers must cope with is
present, at realistic rates, without any download.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from string import Formatter

import holidays
import numpy as np
import polars as pl

from ml.requests.taxonomy import synthetic_taxonomy

REQUEST_SOURCE = "synthetic"

TYPO_RATE = 0.10
CONTEXT_RATE = 0.25
GREETING_RATE = 0.20
SIGN_OFF_RATE = 0.15
NEAR_DUPLICATE_RATE = 0.03
EXACT_DUPLICATE_RATE = 0.01
ZIPF_EXPONENT = 1.1
ZIPF_OFFSET = 3.0
POPULARITY_SEED = 77
"""Which intents are popular is a property of the bank, not of the sample: fixed across seeds."""

MISSING_RATE = 0.02
OUTLIER_RATE = 0.0005
PROMO_SEGMENT_DAYS = 28
PROMO_PROBABILITY = 0.35

# --------------------------------------------------------------------------------------------
# Requests: paraphrase templates per intent. Each intent's templates share distinctive words
# (learnable), while intents of one product share the product's vocabulary (not trivial).
# --------------------------------------------------------------------------------------------

TEMPLATES: dict[str, tuple[str, ...]] = {
    "card_activate": (
        "How do I activate my new {card}?",
        "Just received my {card} in the mail, how do I activate it?",
        "Need to activate the {card} {last4}.",
        "My new card arrived {when} but it is not activated yet.",
        "Where in the app can I activate a card?",
        "Activation of my replacement {card} isn't working.",
    ),
    "card_lost_or_stolen": (
        "I lost my {card}, please block it.",
        "My wallet was stolen {when} with my {card} in it.",
        "Can't find my card anywhere, I think I lost it in {city}.",
        "Someone stole my {card} {last4}, freeze it now!",
        "How do I report a stolen card?",
        "Lost card, need it cancelled.",
    ),
    "card_declined": (
        "My {card} was declined at {merchant}.",
        "Why was my card payment of {amount} declined?",
        "Card keeps getting declined {when} even though I have money.",
        "Transaction declined at {merchant}, what's wrong with my card?",
        "Payment refused at the till, card declined.",
        "Online purchase at {merchant} declined again.",
    ),
    "card_replace_damaged": (
        "My {card} is damaged and the chip doesn't work, can I get a replacement?",
        "Card snapped in half, need a new one.",
        "The magnetic strip on my card is worn out, please send a replacement.",
        "Can you replace my broken {card}?",
        "Contactless stopped working, I think my card is damaged.",
    ),
    "card_change_pin": (
        "How can I change my PIN?",
        "I forgot the PIN for my {card}.",
        "Want to set a new PIN number on my card.",
        "My PIN got blocked after 3 wrong tries.",
        "Where can I view my card PIN in the app?",
    ),
    "card_delivery_status": (
        "When will my new card arrive?",
        "Ordered a {card} {when} and it still hasn't arrived.",
        "Can you track the delivery of my card?",
        "My replacement card is taking too long to be delivered.",
        "Card delivery status please, still waiting after {n_days} days.",
    ),
    "card_spending_limit": (
        "How do I raise the daily spending limit on my {card}?",
        "Can I increase my contactless limit?",
        "Want to lower the spending limit on my card.",
        "My card hit its daily spending limit, can you change it to {amount}?",
        "What is the maximum I can spend per day with my card?",
    ),
    "credit_card_apply": (
        "I'd like to apply for a credit card.",
        "What credit cards do you offer and how do I apply?",
        "Can I get a credit card with a {amount} limit?",
        "How long does a credit card application take?",
        "Am I eligible for your rewards credit card?",
    ),
    "credit_card_payment": (
        "How do I pay my credit card bill?",
        "Want to pay off the full credit card balance of {amount}.",
        "When is my credit card payment due?",
        "Can I set up autopay for the minimum payment on my credit card?",
        "I missed my credit card payment {when}, what happens now?",
    ),
    "credit_card_limit_increase": (
        "Can I get a credit limit increase?",
        "Please raise my credit card limit to {amount}.",
        "How do I request a higher credit limit?",
        "My credit limit is too low, can you increase it?",
        "Why was my credit limit increase request rejected?",
    ),
    "credit_card_statement": (
        "I don't understand my credit card statement.",
        "Where can I download my credit card statement for {month}?",
        "My credit card statement balance looks wrong.",
        "When is the credit card statement closing date?",
        "What does the minimum due on my credit card statement mean?",
    ),
    "credit_card_interest_charge": (
        "Why was I charged interest on my credit card?",
        "There's an interest charge of {amount} on my credit card, I paid in full.",
        "What is the APR on my credit card?",
        "How is credit card interest calculated?",
        "Please refund the interest charged on my credit card {when}.",
    ),
    "credit_card_rewards": (
        "How many reward points do I have on my credit card?",
        "How do I redeem my credit card points?",
        "My purchase at {merchant} didn't earn cashback.",
        "Do I get rewards points on my credit card for travel?",
        "When will my credit card cashback be paid?",
    ),
    "credit_card_cancel": (
        "I want to cancel my credit card.",
        "How do I close my credit card account?",
        "Please close my credit card, I don't use it anymore.",
        "Will cancelling my credit card affect my credit score?",
        "Cancel the credit card {last4}.",
    ),
    "account_open": (
        "How do I open a checking account?",
        "I'd like to open a new account with you.",
        "What documents do I need to open an account?",
        "Can I open a joint account with {person}?",
        "Want to open a student account.",
    ),
    "account_close": (
        "I want to close my checking account.",
        "How do I close my account and move the money?",
        "Please close my account, I'm moving to another bank.",
        "Close the joint account I have with {person}.",
        "Is there a charge for closing my account?",
    ),
    "account_balance": (
        "What is my account balance?",
        "How much money is in my checking account?",
        "Why is my available balance lower than my current balance?",
        "My balance looks wrong after {when}.",
        "Can you tell me the balance of my account",
    ),
    "account_statement": (
        "I need a bank statement for {month}.",
        "How do I download my account statements?",
        "Can you send me a paper statement for my account?",
        "Need a proof of account letter for {person}.",
        "Where can I find the last {months} of statements?",
    ),
    "account_fee_charged": (
        "Why was I charged a monthly account fee?",
        "There's a {amount} maintenance fee on my account.",
        "Please refund the service fee charged {when}.",
        "How do I avoid the monthly maintenance fee?",
        "I was charged a fee for a paper statement.",
    ),
    "account_overdraft": (
        "Can I get an overdraft on my account?",
        "I went into my overdraft, how much will it cost?",
        "Please increase my overdraft limit to {amount}.",
        "Why was I charged an overdraft fee?",
        "How do I turn off overdraft protection?",
    ),
    "account_update_details": (
        "I moved, how do I change my address?",
        "Need to update my phone number on my account.",
        "How do I change my name after getting married?",
        "Update the email address on my account please.",
        "My personal details are out of date.",
    ),
    "transfer_make_domestic": (
        "How do I transfer money to {person}?",
        "I want to send {amount} to another bank account.",
        "How can I make a bank transfer to a friend?",
        "Transfer {amount} from my checking to {person}.",
        "How do I add a new payee and send money?",
    ),
    "transfer_make_international": (
        "How do I send money to {country}?",
        "I need to make an international transfer of {amount}.",
        "What details do I need for a wire transfer abroad?",
        "Can I send money overseas in euros?",
        "What's the exchange rate for a transfer to {country}?",
    ),
    "transfer_status": (
        "My transfer to {person} hasn't arrived yet.",
        "How long does a transfer take to arrive?",
        "I sent {amount} {when}, where is it?",
        "The money I transferred is still not there.",
        "Can you check the status of my transfer?",
    ),
    "transfer_failed": (
        "My transfer failed, why?",
        "The transfer of {amount} to {country} was returned.",
        "Tried to send money but the transfer was rejected.",
        "Transfer failed with an error {when}.",
        "Why does my transfer keep failing?",
    ),
    "transfer_cancel": (
        "Can I cancel a transfer I just made?",
        "I sent {amount} to the wrong account, please cancel the transfer.",
        "How do I stop a scheduled transfer?",
        "Please recall the transfer I made {when}.",
        "I made a mistake in the transfer, can it be reversed?",
    ),
    "transfer_limit": (
        "What is the maximum amount I can transfer per day?",
        "How do I increase my transfer limit?",
        "I can't send {amount}, it says I'm over the transfer limit.",
        "Is there a daily limit on transfers?",
        "Raise my daily transfer limit please.",
    ),
    "transfer_fee": (
        "How much does a transfer cost?",
        "Why was I charged a fee for my transfer?",
        "Are international transfers free?",
        "There's a {amount} fee on the transfer to {country}.",
        "What fees do you charge for wire transfers?",
    ),
    "payment_recurring_setup": (
        "How do I set up a recurring payment?",
        "I want to pay my rent automatically every month.",
        "Set up autopay for my {merchant} subscription.",
        "Can I schedule a monthly payment of {amount}?",
        "How do I create a standing order?",
    ),
    "payment_recurring_cancel": (
        "How do I cancel a recurring payment?",
        "Stop the monthly payment to {merchant}.",
        "I cancelled my {merchant} subscription but they still charge me.",
        "Please cancel the standing order.",
        "I want to stop an automatic payment.",
    ),
    "payment_bill_pay": (
        "How do I pay a bill online?",
        "I want to pay my electricity bill of {amount}.",
        "Can I pay my utility bill through the app?",
        "Add a new biller for my phone bill.",
        "Bill pay isn't showing my water company.",
    ),
    "payment_charged_twice": (
        "I was charged twice at {merchant}.",
        "Duplicate charge of {amount} on my account.",
        "Same payment appears two times {when}.",
        "{merchant} took the money twice.",
        "Why do I see a double charge for one purchase?",
    ),
    "payment_pending": (
        "Why is my payment still pending?",
        "The {amount} payment at {merchant} has been pending for {n_days} days.",
        "How long do pending transactions take?",
        "Pending charge from a hotel is still on my account.",
        "When will the pending payment clear?",
    ),
    "payment_refund_missing": (
        "{merchant} said they refunded me but I don't see it.",
        "Where is my refund of {amount}?",
        "I returned an item {when} and still no refund.",
        "How long does a refund take to show on my account?",
        "Refund from {merchant} not received.",
    ),
    "payment_wrong_amount": (
        "{merchant} charged me the wrong amount.",
        "The amount on my statement is different from my receipt.",
        "I paid {amount} but was charged more.",
        "The card payment amount is wrong.",
        "Merchant overcharged me, the amount doesn't match.",
    ),
    "atm_cash_not_dispensed": (
        "The ATM didn't give me my cash but took the money from my account.",
        "Cash machine didn't dispense {amount}.",
        "ATM withdrawal failed but I was still debited.",
        "No money came out of the ATM {when}.",
        "ATM in {city} charged me and gave no cash.",
    ),
    "atm_card_retained": (
        "The ATM swallowed my card.",
        "Cash machine kept my {card} {when}.",
        "My card got stuck in the ATM in {city}.",
        "ATM retained my card, what should I do?",
        "How do I get my card back from the ATM?",
    ),
    "atm_withdrawal_limit": (
        "How much cash can I withdraw from an ATM per day?",
        "I need to withdraw {amount} in cash, is that over the limit?",
        "Can I raise my ATM withdrawal limit?",
        "What's the daily cash withdrawal limit?",
        "ATM says I've reached my withdrawal limit.",
    ),
    "atm_find_nearby": (
        "Where is the nearest ATM?",
        "Are there fee-free ATMs in {city}?",
        "Find a cash machine near me.",
        "Is there a branch with an ATM open on Sunday?",
        "Which ATMs can I use in {country}?",
    ),
    "atm_fee_charged": (
        "Why was I charged a fee for using the ATM?",
        "ATM fee of {amount} on my statement.",
        "Do you charge for cash withdrawals abroad?",
        "How can I avoid ATM fees?",
        "I was charged an out of network ATM fee {when}.",
    ),
    "atm_cash_deposit": (
        "How do I deposit cash into my account?",
        "Can I deposit cash at an ATM?",
        "I deposited {amount} in cash {when} but it's not showing.",
        "Where can I pay in cash?",
        "Is there a limit on cash deposits at the ATM?",
    ),
    "atm_wrong_amount_dispensed": (
        "The ATM gave me less cash than I asked for.",
        "I withdrew {amount} but got less from the cash machine.",
        "ATM dispensed the wrong amount.",
        "Cash machine short-changed me {when}.",
        "Missing notes from my ATM withdrawal in {city}.",
    ),
    "loan_apply": (
        "I'd like to apply for a personal loan of {amount}.",
        "How do I apply for a loan?",
        "Can I borrow {amount} over {months}?",
        "What do I need to get a personal loan?",
        "Am I eligible for a car loan?",
    ),
    "loan_application_status": (
        "What's the status of my loan application?",
        "I applied for a loan {when}, any update?",
        "Has my loan been approved yet?",
        "How long does loan approval take?",
        "Why was my loan application declined?",
    ),
    "loan_repayment": (
        "When is my next loan repayment due?",
        "How much is my monthly loan payment?",
        "Can I change the date of my loan repayments?",
        "I missed a loan repayment {when}.",
        "How do I make a loan payment?",
    ),
    "loan_early_payoff": (
        "Can I pay off my loan early?",
        "How much to settle my loan in full?",
        "Is there a penalty for early loan repayment?",
        "I want to make an extra payment of {amount} on my loan.",
        "Get a loan payoff quote.",
    ),
    "loan_interest_rate": (
        "What interest rate would I get on a personal loan?",
        "What's the APR on a {amount} loan?",
        "Why is my loan interest rate so high?",
        "Are your loan rates fixed or variable?",
        "Compare loan rates over {months}.",
    ),
    "loan_payment_holiday": (
        "Can I take a payment holiday on my loan?",
        "I lost my job and can't make my loan payments.",
        "Is it possible to pause my loan repayments for {months}?",
        "I'm struggling to pay my loan, what help is there?",
        "Request a payment deferral on my loan.",
    ),
    "loan_top_up": (
        "Can I top up my existing loan?",
        "I need to borrow an extra {amount} on my loan.",
        "How do I add more money to my current loan?",
        "Increase my personal loan by {amount}.",
        "Can I extend my loan to borrow more?",
    ),
    "mortgage_apply": (
        "How do I apply for a mortgage?",
        "I'm a first-time buyer, can I get a mortgage?",
        "How much can I borrow for a mortgage?",
        "I want a mortgage for a house worth {home_price}.",
        "Book a mortgage appointment.",
    ),
    "mortgage_rate_switch": (
        "My fixed mortgage rate ends soon, what are my options?",
        "Can I switch to a new mortgage rate?",
        "I want to refinance my mortgage.",
        "What {term} fixed mortgage rates do you offer?",
        "Lock in a mortgage rate.",
    ),
    "mortgage_overpayment": (
        "Can I overpay my mortgage?",
        "I want to make a mortgage overpayment of {amount}.",
        "Is there a fee for overpaying my mortgage?",
        "How do overpayments reduce my mortgage term?",
        "Pay off part of my mortgage.",
    ),
    "mortgage_payment_date": (
        "Can I change my mortgage payment date?",
        "Move my monthly mortgage payment to the {day}.",
        "When is my mortgage payment taken?",
        "Mortgage payment day doesn't match my payday.",
        "I get paid on the {day}, can my mortgage payment come out after that?",
    ),
    "mortgage_arrears": (
        "I missed my mortgage payment.",
        "I can't afford my mortgage this month.",
        "My mortgage is in arrears, what can I do?",
        "Help, behind on mortgage payments.",
        "Can I get a mortgage payment holiday?",
    ),
    "mortgage_payoff_statement": (
        "I need a mortgage payoff statement.",
        "How much do I need to pay off my mortgage in full?",
        "Request a mortgage redemption statement, I'm selling my house.",
        "What is the remaining balance on my mortgage?",
        "Mortgage settlement figure please.",
    ),
    "mortgage_escrow": (
        "Why did my mortgage escrow payment go up?",
        "Are my property taxes paid from escrow?",
        "Escrow shortage on my mortgage statement.",
        "How do I update my home insurance for the mortgage escrow?",
        "Can I get an escrow analysis?",
    ),
    "savings_open": (
        "I want to open a savings account.",
        "How do I open a high yield savings account?",
        "Can I open a savings account for my child?",
        "Open a new savings account and move {amount} into it.",
        "What savings accounts do you offer?",
    ),
    "savings_interest_rate": (
        "What interest rate does my savings account pay?",
        "Why did my savings rate drop?",
        "When is interest paid on savings?",
        "How much interest will I earn on {amount} in savings?",
        "Is the savings interest rate fixed?",
    ),
    "savings_withdraw": (
        "How do I withdraw money from my savings?",
        "Move {amount} from savings to checking.",
        "Can I take money out of my savings account without a penalty?",
        "Why can't I withdraw from my savings?",
        "Is there a limit on savings withdrawals per month?",
    ),
    "savings_deposit": (
        "How do I put money into my savings account?",
        "Transfer {amount} into savings every month.",
        "My savings deposit hasn't shown up.",
        "Can I deposit into my savings from another bank?",
        "Add {amount} to my savings.",
    ),
    "savings_cd_maturity": (
        "My CD is maturing soon, what are my options?",
        "What happens when my certificate of deposit matures?",
        "Can I renew my {term} CD?",
        "Is there a penalty to break my CD early?",
        "Open a {term} certificate of deposit.",
    ),
    "savings_goal": (
        "How do I set up a savings goal?",
        "I want to save {amount} for {purpose}.",
        "Turn on round-ups to my savings.",
        "Can I create a savings pot for {purpose}?",
        "Change my savings goal.",
    ),
    "savings_retirement_account": (
        "Can I open an IRA with you?",
        "How much can I contribute to my IRA this year?",
        "Roll over my 401k into an IRA.",
        "What's the difference between a Roth IRA and a traditional IRA?",
        "Withdraw from my retirement account.",
    ),
    "online_login_problem": (
        "I can't log in to online banking.",
        "The app won't let me sign in.",
        "Login keeps failing on my {device}.",
        "Error when logging into my account online.",
        "I'm locked out of the app.",
    ),
    "online_password_reset": (
        "How do I reset my password?",
        "Forgot my online banking password.",
        "The password reset link isn't working.",
        "Change my password for the app.",
        "Forgot my username and password.",
    ),
    "online_two_factor": (
        "I'm not receiving the verification code.",
        "The one-time passcode text never arrives.",
        "How do I change the phone number for two-factor authentication?",
        "Security code expired before I could enter it.",
        "Set up an authenticator app for 2FA.",
    ),
    "online_app_error": (
        "The app keeps crashing on my {device}.",
        "The mobile app shows an error when I open it.",
        "App is not loading since the update.",
        "The banking app freezes {when}.",
        "Website is down, getting an error.",
    ),
    "online_register": (
        "How do I register for online banking?",
        "I want to set up the mobile app for the first time.",
        "Sign up for internet banking.",
        "Where do I enroll in online banking?",
        "Downloaded the app, how do I create a login?",
    ),
    "online_new_device": (
        "I got a new {device}, how do I move my banking app?",
        "How do I set up the app on my new phone?",
        "Changed phones and now the app won't verify.",
        "Register a new device for mobile banking.",
        "Remove my old phone from my account.",
    ),
    "online_mobile_check_deposit": (
        "How do I deposit a check with the app?",
        "Mobile check deposit was rejected.",
        "My check deposit of {amount} is on hold.",
        "The app can't read my check photo.",
        "What's the mobile deposit limit for checks?",
    ),
    "fraud_unrecognized_transaction": (
        "There's a transaction from {merchant} I don't recognize.",
        "I didn't make this payment of {amount}.",
        "Unknown charge on my account {when}.",
        "Someone used my card without permission at {merchant}.",
        "Strange transaction in {country}, it wasn't me.",
    ),
    "fraud_phishing_report": (
        "I got a suspicious text claiming to be from the bank.",
        "Is this email from you real? It asks for my password.",
        "Report a phishing email.",
        "Someone called pretending to be the bank and asked for my PIN.",
        "I clicked a link in a fake bank message.",
    ),
    "fraud_scam_payment": (
        "I was scammed into sending {amount} to a stranger.",
        "I paid for something online and it was a scam.",
        "I think I sent money to a fraudster, can you get it back?",
        "A scammer tricked me into transferring {amount}.",
        "Investment scam, I transferred money {when}.",
    ),
    "fraud_account_locked": (
        "My account has been locked for security reasons.",
        "Why is my account frozen?",
        "My card and account are blocked, fraud alert.",
        "Unlock my account please, it was a genuine payment.",
        "You blocked my payment to {merchant} as suspicious.",
    ),
    "fraud_identity_theft": (
        "Someone opened an account in my name.",
        "I think my identity has been stolen.",
        "A loan was taken out in my name that I didn't apply for.",
        "My personal details were leaked in a data breach.",
        "Someone is pretending to be me.",
    ),
    "fraud_alert_confirm": (
        "I got a fraud alert text, was it really you?",
        "Confirm that the {amount} payment was me.",
        "How do I respond to a fraud alert?",
        "Yes, that transaction at {merchant} was mine.",
        "You called about suspicious activity on my account.",
    ),
    "fraud_dispute_status": (
        "What's happening with my fraud claim?",
        "I disputed a charge {when}, any update?",
        "When will I get my money back from the fraud case?",
        "Status of my chargeback for {merchant}.",
        "How long does a dispute investigation take?",
    ),
}

MERCHANTS = (
    "Amazon", "Walmart", "Target", "Starbucks", "Uber", "Netflix", "Shell", "Costco", "Spotify",
    "Apple", "eBay", "Airbnb", "Delta", "Best Buy", "Home Depot", "CVS", "Walgreens", "Chipotle",
    "Lyft", "DoorDash", "Kroger", "IKEA", "Etsy", "PayPal", "Hulu", "McDonald's", "Expedia",
    "Whole Foods", "Trader Joe's", "Steam", "the gas station", "a hotel", "an online shop",
)  # fmt: skip
CARD_KINDS = (
    "debit card", "card", "Visa debit", "bank card", "contactless card", "Mastercard",
    "virtual card", "new card",
)  # fmt: skip
WHEN = (
    "yesterday", "today", "this morning", "last night", "last week", "on Monday", "on Friday",
    "two days ago", "a few days ago", "over the weekend", "last month", "on the 3rd",
)  # fmt: skip
COUNTRIES = (
    "Mexico", "Canada", "the UK", "Germany", "India", "the Philippines", "France", "Spain",
    "Brazil", "Japan", "Italy", "Nigeria", "Poland", "Vietnam",
)  # fmt: skip
CITIES = (
    "Chicago", "New York", "Boston", "Austin", "Seattle", "Denver", "Miami", "Atlanta",
    "Phoenix", "San Diego", "Portland", "Dallas", "the mall", "the airport",
)  # fmt: skip
DEVICES = ("iPhone", "Android phone", "phone", "Samsung", "tablet", "iPad", "Pixel")
PEOPLE = (
    "my wife", "my husband", "my son", "my daughter", "my landlord", "my sister", "my brother",
    "my mom", "my dad", "a friend", "my partner", "my roommate",
)  # fmt: skip
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December", "last month",
)  # fmt: skip
DURATIONS = ("6 months", "12 months", "18 months", "2 years", "3 years", "5 years", "3 months")
TERMS = ("1-year", "2-year", "3 year", "5-year", "6 month", "12 month")
DAYS_OF_MONTH = ("1st", "5th", "10th", "15th", "20th", "25th", "28th", "last day of the month")
PURPOSES = (
    "a vacation", "a new car", "Christmas", "a house deposit", "emergencies", "a wedding",
    "college", "holidays",
)  # fmt: skip
MONEY_FORMATS = (
    ("${:,.0f}", 30),
    ("${:,.2f}", 20),
    ("{:,.0f} dollars", 12),
    ("{:,.0f} USD", 6),
    ("{:,.0f}$", 6),
    ("€{:,.0f}", 5),
    ("{:,.0f} euros", 3),
    ("£{:,.0f}", 3),
    ("{:,.2f}", 5),
)
_MONEY_TOTAL = sum(weight for _, weight in MONEY_FORMATS)
_MONEY_CUMULATIVE = [total / _MONEY_TOTAL for total in accumulate(w for _, w in MONEY_FORMATS)]

GREETINGS = (
    "Hi, ", "Hello, ", "Hey ", "Hi there, ", "Good morning, ", "Hello. ", "hi ", "Quick question: ",
    "Sorry to bother you, ", "Hi team, ", "Hello, I have a problem. ",
)  # fmt: skip
SIGN_OFFS = (
    " Thanks", " Thank you!", " Please help.", " Thx", " asap", " Cheers", " thanks!",
    " Can you help?", " Thanks in advance.", " This is urgent.",
)  # fmt: skip
# Words a re-sent message gains; none ends a template, greeting or sign-off (keeps edits visible).
EXTRA_WORDS = ("please", "pls", "plz", "again", "urgent", "still")
CONTEXTS = (
    " I've been a customer for years.", " This is the second time I'm asking.",
    " I'm travelling right now.", " I need this sorted today.", " I tried the app already.",
    " Called yesterday but nobody answered.", " Not sure if this is the right place to ask.",
    " My husband has the same problem.", " I'm on my lunch break so please be quick.",
    " Customer number {number}.", " Case {number}.", " I'm not very good with computers.",
)  # fmt: skip

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _neighbour_keys() -> dict[str, str]:
    """For each letter, the keys a finger lands on instead: left, right, above, below."""
    neighbours: dict[str, str] = {}
    for row_index, row in enumerate(KEYBOARD_ROWS):
        for col, key in enumerate(row):
            near = row[max(col - 1, 0) : col] + row[col + 1 : col + 2]
            for other in (row_index - 1, row_index + 1):
                if 0 <= other < len(KEYBOARD_ROWS):
                    near += KEYBOARD_ROWS[other][col : col + 1]
            neighbours[key] = near
    return neighbours


NEIGHBOUR_KEYS = _neighbour_keys()


def _pick(options: tuple[str, ...]) -> Callable[[float], str]:
    return lambda u: options[int(u * len(options))]


def _money(u: float) -> str:
    """An amount with a currency written the many ways customers write it."""
    style = min(bisect_right(_MONEY_CUMULATIVE, u), len(MONEY_FORMATS) - 1)
    fraction = (u * 7919.0) % 1.0
    value = math.exp(math.log(5.0) + fraction * math.log(4000.0 / 5.0))
    pattern = MONEY_FORMATS[style][0]
    return pattern.format(value if ".2f" in pattern else round(value))


def _home_price(u: float) -> str:
    return f"${round(120 + u * 780) * 1000:,}"


def _last4(u: float) -> str:
    digits = f"{int(u * 10_000):04d}"
    return ("ending in ", "ending ", "no. ", "****")[int(u * 997) % 4] + digits


SLOT_FILLERS: dict[str, Callable[[float], str]] = {
    "amount": _money,
    "merchant": _pick(MERCHANTS),
    "when": _pick(WHEN),
    "card": _pick(CARD_KINDS),
    "country": _pick(COUNTRIES),
    "city": _pick(CITIES),
    "device": _pick(DEVICES),
    "last4": _last4,
    "person": _pick(PEOPLE),
    "n_days": lambda u: str(2 + int(u * 12)),
    "months": _pick(DURATIONS),
    "term": _pick(TERMS),
    "month": _pick(MONTHS),
    "home_price": _home_price,
    "day": _pick(DAYS_OF_MONTH),
    "purpose": _pick(PURPOSES),
}


def _slots(template: str) -> tuple[str, ...]:
    return tuple(field for _, field, _, _ in Formatter().parse(template) if field)


_TEMPLATE_SLOTS: dict[str, tuple[tuple[str, ...], ...]] = {
    intent: tuple(_slots(template) for template in templates)
    for intent, templates in TEMPLATES.items()
}
MAX_SLOTS = max(len(slots) for per_intent in _TEMPLATE_SLOTS.values() for slots in per_intent)

# Uniform draws per request, one column each: what they decide.
(
    _U_TEMPLATE,
    _U_GREETING,
    _U_SIGN_OFF,
    _U_CONTEXT,
    _U_CASE,
    _U_PUNCT,
    _U_TYPO,
    _U_TYPO_POS,
    _U_TYPO_KIND,
) = range(9)
_U_SLOTS = 9
_U_COLUMNS = _U_SLOTS + MAX_SLOTS


def _typo(text: str, u_position: float, u_kind: float) -> str:
    """One keyboard slip inside a word: swap, drop, double or a neighbouring key."""
    letters = [i for i, char in enumerate(text) if char.isalpha()]
    if len(letters) < 4:
        return text
    position = letters[int(u_position * (len(letters) - 1))]
    kind = int(u_kind * 4)
    char = text[position]
    if kind == 0 and position + 1 < len(text) and text[position + 1].isalpha():
        return text[:position] + text[position + 1] + char + text[position + 2 :]
    if kind == 1:
        return text[:position] + text[position + 1 :]
    if kind == 2:
        return text[:position] + char + text[position:]
    near = NEIGHBOUR_KEYS.get(char.lower(), "")
    if not near:
        return text[:position] + char + text[position:]
    return text[:position] + near[int(u_kind * 4 % 1 * len(near))] + text[position + 1 :]


def _punctuate(text: str, u_punct: float) -> str:
    """End punctuation the way people type into a chat box: often none, sometimes too much."""
    if u_punct < 0.30:
        return text.rstrip(".?!")
    if u_punct < 0.36 and text[-1:] in "?!":
        return text + text[-1] * (1 + int(u_punct * 100) % 2)
    if u_punct < 0.39:
        return text.rstrip(".?!") + " ."
    return text


def _lower_first(text: str) -> str:
    return text if text[:2] in ("I ", "I'") else text[:1].lower() + text[1:]


def _recase(text: str, u_case: float) -> str:
    """Mostly as written or all lowercase; a few shouted; some without the capital."""
    if u_case < 0.40:
        return text.lower()
    if u_case < 0.43:
        return text.upper()
    if u_case < 0.49:
        return _lower_first(text)
    return text


def _compose(intent: str, u: list[float]) -> str:
    """One customer message for `intent` from pre-drawn uniforms (no RNG calls per row)."""
    templates = TEMPLATES[intent]
    index = int(u[_U_TEMPLATE] * len(templates))
    text = templates[index]
    slots = _TEMPLATE_SLOTS[intent][index]
    if slots:
        text = text.format_map(
            {slot: SLOT_FILLERS[slot](u[_U_SLOTS + k]) for k, slot in enumerate(slots)}
        )
    text = _punctuate(text, u[_U_PUNCT])
    if u[_U_GREETING] < GREETING_RATE:
        text = GREETINGS[int(u[_U_GREETING] / GREETING_RATE * len(GREETINGS))] + _lower_first(text)
    if u[_U_CONTEXT] < CONTEXT_RATE:
        share = u[_U_CONTEXT] / CONTEXT_RATE * len(CONTEXTS)
        number = f"{int(share % 1 * 10**7):07d}"
        text += ("" if text[-1:] in ".?!" else ".") + CONTEXTS[int(share)].replace(
            "{number}", number
        )
    if u[_U_SIGN_OFF] < SIGN_OFF_RATE:
        text += SIGN_OFFS[int(u[_U_SIGN_OFF] / SIGN_OFF_RATE * len(SIGN_OFFS))]
    text = _recase(text, u[_U_CASE])
    if u[_U_TYPO] < TYPO_RATE:
        text = _typo(text, u[_U_TYPO_POS], u[_U_TYPO_KIND])
    return text


def _near_duplicate(text: str, u_kind: float, u_detail: float) -> str:
    """The same request typed again with a tiny edit (re-sent, or copy-pasted and touched up)."""
    kind = int(u_kind * 5)
    edited = text
    if kind == 0:
        edited = text.lower() if text != text.lower() else text.capitalize()
    elif kind == 1:
        edited = text.rstrip(".?!") if text[-1:] in ".?!" else text + "?"
    elif kind == 2:
        spaces = [i for i, char in enumerate(text) if char == " "]
        if spaces:
            at = spaces[int(u_detail * len(spaces))]
            edited = text[:at] + " " + text[at:]
    elif kind == 3:
        digits = [i for i, char in enumerate(text) if char.isdigit()]
        if digits:
            at = digits[int(u_detail * len(digits))]
            new_digit = str((int(text[at]) + 1 + int(u_detail * 8)) % 10)
            edited = text[:at] + new_digit + text[at + 1 :]
    if edited == text:
        word = EXTRA_WORDS[int(u_detail * len(EXTRA_WORDS))]
        edited = f"{word} {text}" if u_kind > 0.9 else f"{text} {word}"
    return edited


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# Requests arrive mostly in waking hours (UTC hour → relative intensity).
HOURLY_INTENSITY = np.array(
    [0.15, 0.1, 0.08, 0.08, 0.1, 0.18, 0.35, 0.6, 0.85, 1.0, 1.0, 0.95,
     0.9, 0.95, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.45, 0.3, 0.2]
)  # fmt: skip


def _arrival_times(rng: np.random.Generator, count: int, first_us: int, span_us: int) -> np.ndarray:
    """Sorted epoch microseconds in [first, first + span] with a day/night rhythm (thinning)."""
    accepted = [np.empty(0, dtype=np.int64)]
    have = 0
    while have < count:
        size = 2 * (count - have) + 16
        candidates = first_us + rng.integers(0, span_us + 1, size=size, dtype=np.int64)
        hours = (candidates // 3_600_000_000) % 24
        keep = candidates[rng.random(candidates.size) < HOURLY_INTENSITY[hours]]
        accepted.append(keep)
        have += keep.size
    return np.sort(np.concatenate(accepted)[:count])


def _intent_weights(count: int) -> np.ndarray:
    """Zipf–Mandelbrot popularity over intents (a heavy head, a long tail), in a fixed order."""
    ranks = np.empty(count, dtype=np.int64)
    ranks[np.random.default_rng(POPULARITY_SEED).permutation(count)] = np.arange(count)
    weights = 1.0 / (ranks + ZIPF_OFFSET) ** ZIPF_EXPONENT
    return weights / weights.sum()


def generate_requests(n: int, *, seed: int = 7, start: datetime, end: datetime) -> pl.DataFrame:
    """`n` customer requests over the synthetic taxonomy, received between `start` and `end`.

    About 1% of rows repeat an earlier row verbatim (same request_id: a re-delivered event the
    validation layer must quarantine), about 3% are near-duplicates of an earlier text under a new
    request_id, and every intent appears at least once whenever n leaves room for it.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    start_utc, end_utc = _as_utc(start), _as_utc(end)
    if end_utc < start_utc:
        raise ValueError(f"end {end_utc.isoformat()} is before start {start_utc.isoformat()}")
    intents = synthetic_taxonomy().intents
    rng = np.random.default_rng(seed)

    original_rate = 1.0 - NEAR_DUPLICATE_RATE - EXACT_DUPLICATE_RATE
    kinds = rng.choice(3, size=n, p=[original_rate, NEAR_DUPLICATE_RATE, EXACT_DUPLICATE_RATE])
    if n:
        kinds[0] = 0
    originals = int((kinds == 0).sum())
    unique = int((kinds != 2).sum())

    intent_codes = rng.choice(len(intents), size=originals, p=_intent_weights(len(intents)))
    if originals >= len(intents):
        spots = rng.choice(originals, size=len(intents), replace=False)
        intent_codes[spots] = rng.permutation(len(intents))

    span_us = (end_utc - start_utc) // timedelta(microseconds=1)
    epoch_us = (start_utc - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    arrivals = _arrival_times(rng, unique, epoch_us, span_us).tolist()
    uniforms = rng.random((n, _U_COLUMNS)).tolist()
    source_draws = rng.random(n).tolist()

    request_ids: list[str] = []
    texts: list[str] = []
    labels: list[str] = []
    received: list[int] = []
    original_rows: list[int] = []
    unique_rows: list[int] = []
    next_original = 0
    for row, kind in enumerate(kinds.tolist()):
        u = uniforms[row]
        if kind == 2:
            source = unique_rows[int(source_draws[row] * len(unique_rows))]
            request_ids.append(request_ids[source])
            texts.append(texts[source])
            labels.append(labels[source])
            received.append(received[source])
            continue
        if kind == 1:
            source = original_rows[int(source_draws[row] * len(original_rows))]
            texts.append(_near_duplicate(texts[source], u[_U_TEMPLATE], u[_U_CASE]))
            labels.append(labels[source])
        else:
            intent = intents[intent_codes[next_original]]
            next_original += 1
            texts.append(_compose(intent, u))
            labels.append(intent)
            original_rows.append(row)
        received.append(arrivals[len(unique_rows)])
        unique_rows.append(row)
        request_ids.append(f"syn-{seed}-{len(unique_rows):06d}")

    return pl.DataFrame(
        {
            "request_id": pl.Series(request_ids, dtype=pl.Utf8),
            "text": pl.Series(texts, dtype=pl.Utf8),
            "intent": pl.Series(labels, dtype=pl.Utf8),
            "source": pl.Series([REQUEST_SOURCE] * n, dtype=pl.Utf8),
            "received_at": pl.Series(received, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        }
    )


# --------------------------------------------------------------------------------------------
# Demand: multiplicative structure (level × trend × week × year × holidays × price × feature)
# with negative-binomial noise, computed on a (series, day) grid in numpy.
# --------------------------------------------------------------------------------------------

WEEKLY_PROFILE = np.array([0.88, 0.85, 0.90, 0.95, 1.08, 1.32, 1.22])  # Monday .. Sunday
HOLIDAY_EFFECTS: dict[str, dict[int, float]] = {
    "Thanksgiving": {-3: 1.25, -2: 1.45, -1: 1.6, 0: 0.55, 1: 1.9, 2: 1.35},
    "Christmas": {-7: 1.2, -6: 1.25, -5: 1.3, -4: 1.4, -3: 1.5, -2: 1.6, -1: 1.75, 0: 0.2, 1: 1.3},
    "New Year": {-1: 1.35, 0: 0.6},
    "Independence Day": {-2: 1.2, -1: 1.4, 0: 1.15},
}
DEFAULT_HOLIDAY_EFFECT = {-1: 1.1, 0: 1.15}


def _holiday_multiplier(first: date, n_days: int) -> np.ndarray:
    """Per-day demand multiplier from US holidays: run-ups, closures and the Black Friday spike."""
    multiplier = np.ones(n_days)
    last = first + timedelta(days=n_days - 1)
    calendar = holidays.US(years=range(first.year, last.year + 2))
    for day, name in calendar.items():
        if "(observed)" in name:
            continue
        effect = next(
            (value for key, value in HOLIDAY_EFFECTS.items() if name.startswith(key)),
            DEFAULT_HOLIDAY_EFFECT,
        )
        anchor = (day - first).days
        for offset, factor in effect.items():
            if 0 <= anchor + offset < n_days:
                multiplier[anchor + offset] *= factor
    return multiplier


def _promotions(
    rng: np.random.Generator, n_series: int, n_days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-day promo windows per series, at most one per 4-week segment (so never overlapping).

    Returns the (series, day) discount, deal mask and feature mask.
    """
    segments = -(-n_days // PROMO_SEGMENT_DAYS)
    active = rng.random((n_series, segments)) < PROMO_PROBABILITY
    lengths = rng.integers(3, 15, size=(n_series, segments))
    offsets = (rng.random((n_series, segments)) * (PROMO_SEGMENT_DAYS - lengths + 1)).astype(int)
    starts = np.arange(segments) * PROMO_SEGMENT_DAYS + offsets
    discounts = rng.uniform(0.10, 0.35, size=(n_series, segments))
    featured = rng.random((n_series, segments)) < 0.45
    active &= starts < n_days
    ends = np.minimum(starts + lengths, n_days)

    series, segment = np.nonzero(active)
    window_id = np.zeros((n_series, n_days + 1), dtype=np.int64)
    window_id[series, starts[series, segment]] += segment + 1
    window_id[series, ends[series, segment]] -= segment + 1
    window = np.cumsum(window_id, axis=1)[:, :n_days]
    deal = window > 0
    segment_of_day = np.maximum(window - 1, 0)
    discount = np.where(deal, np.take_along_axis(discounts, segment_of_day, axis=1), 0.0)
    feature = deal & np.take_along_axis(featured, segment_of_day, axis=1)
    return discount, deal, feature


def generate_demand(
    *, stores: int = 5, items: int = 8, start: date, end: date, seed: int = 7
) -> pl.DataFrame:
    """Daily units per store × item from `start` to `end` (inclusive), sorted by the key.

    About 2% of store-item days are missing (never a whole day), ~0.05% are 4–8× outliers, and
    when there are at least two items the last one is intermittent (mostly zero days).
    """
    if stores < 1 or items < 1:
        raise ValueError(f"stores and items must be >= 1, got stores={stores} items={items}")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    rng = np.random.default_rng(seed)
    n_days = (end - start).days + 1
    n_series = stores * items
    store_of = np.repeat(np.arange(stores), items)
    item_of = np.tile(np.arange(items), stores)
    days = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + np.timedelta64(1, "D"))
    day_number = days.astype(np.int64)
    weekday = (day_number + 3) % 7
    day_of_year = (days - days.astype("datetime64[Y]")).astype(np.int64)
    years = np.arange(n_days) / 365.25

    store_size = rng.lognormal(0.0, 0.4, stores)
    item_popularity = rng.lognormal(np.log(12.0), 0.8, items)
    level = store_size[store_of] * item_popularity[item_of] * rng.lognormal(0.0, 0.25, n_series)
    slope = rng.normal(0.03, 0.06, stores)[store_of] + rng.normal(0.0, 0.08, items)[item_of]
    trend = np.exp(slope[:, None] * years[None, :])
    weekend_strength = rng.uniform(0.7, 1.3, stores)
    weekly = WEEKLY_PROFILE[None, :] ** weekend_strength[:, None]
    amplitude = rng.uniform(0.05, 0.30, items)
    phase = rng.uniform(0.0, 2 * np.pi, items)
    yearly = 1.0 + amplitude[:, None] * np.sin(
        2 * np.pi * day_of_year[None, :] / 365.25 + phase[:, None]
    )
    seasonal = weekly[store_of][:, weekday] * yearly[item_of]
    seasonal *= _holiday_multiplier(start, n_days)[None, :]

    discount, deal, feature = _promotions(rng, n_series, n_days)
    base_price = (
        rng.lognormal(np.log(4.0), 0.6, items)[item_of] * rng.uniform(0.95, 1.08, stores)[store_of]
    )
    quarters = np.arange(n_days) // 91
    steps = np.cumprod(rng.lognormal(0.0, 0.04, (n_series, int(quarters[-1]) + 1)), axis=1)
    reference = base_price[:, None] * np.exp(0.025 * years)[None, :]
    regular = np.maximum(np.round(reference * steps[:, quarters], 1) - 0.01, 0.29)  # x.x9 prices
    promo_price = np.floor(regular * (1.0 - discount) * 10.0) / 10.0 + 0.09
    price = np.round(np.where(deal, np.minimum(promo_price, regular - 0.05), regular), 2)
    elasticity = rng.uniform(-2.5, -1.2, items)[item_of]
    feature_lift = rng.uniform(1.2, 1.6, items)[item_of]
    mean = level[:, None] * trend * seasonal * (price / reference) ** elasticity[:, None]
    mean *= np.where(feature, feature_lift[:, None], 1.0)

    dispersion = rng.uniform(4.0, 15.0, items)[item_of][:, None]
    units = rng.negative_binomial(dispersion, dispersion / (dispersion + mean)).astype(np.float64)
    if items >= 2:
        sparse = item_of == items - 1
        relative = mean[sparse] / mean[sparse].mean(axis=1, keepdims=True)
        occurs = rng.random(relative.shape) < np.minimum(0.2 * relative, 0.9)
        sizes = 1.0 + rng.poisson(np.minimum(relative, 4.0))
        units[sparse] = np.where(occurs, sizes, 0.0)

    flat_units = units.ravel()
    outliers = rng.choice(flat_units.size, size=max(1, round(OUTLIER_RATE * flat_units.size)))
    flat_units[outliers] = np.round(
        np.maximum(flat_units[outliers], mean.ravel()[outliers]) * rng.uniform(4, 8, outliers.size)
    )

    missing = rng.random((n_series, n_days)) < MISSING_RATE
    whole_day = np.nonzero(missing.all(axis=0))[0]
    missing[rng.integers(0, n_series, whole_day.size), whole_day] = False
    keep = ~missing.ravel()

    row_series = np.repeat(np.arange(n_series), n_days)[keep]
    row_day = np.tile(np.arange(n_days), n_series)[keep]
    store_width = max(2, len(str(stores)))
    item_width = max(3, len(str(items)))
    store_names = pl.Series([f"S{k + 1:0{store_width}d}" for k in range(stores)], dtype=pl.Utf8)
    item_names = pl.Series([f"I{k + 1:0{item_width}d}" for k in range(items)], dtype=pl.Utf8)
    return pl.DataFrame(
        {
            "store": store_names.gather(store_of[row_series]),
            "item": item_names.gather(item_of[row_series]),
            "period_start": pl.Series(days[row_day], dtype=pl.Date),
            "freq": pl.repeat("D", row_day.size, dtype=pl.Utf8, eager=True),
            "units": pl.Series(flat_units[keep], dtype=pl.Float64),
            "price": pl.Series(price.ravel()[keep], dtype=pl.Float64),
            "deal": pl.Series(deal.ravel()[keep].astype(np.int8), dtype=pl.Int8),
            "feature": pl.Series(feature.ravel()[keep].astype(np.int8), dtype=pl.Int8),
        }
    )
