DROP TABLE notification_attempts;
DROP TABLE notification_deliveries;
